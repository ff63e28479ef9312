#!/usr/bin/env node
'use strict';
// A real mediasoup room server for faceproof's call tests, in the shape of mediasoup-demo's
// server (written here, not copied): one mediasoup Worker, one Router per room, protoo-server on
// 127.0.0.1 with ?roomId=&peerId= in the URL.
//
// Requests it answers: getRouterRtpCapabilities, createWebRtcTransport, connectWebRtcTransport,
// join, produce, closeProducer, pauseConsumer, resumeConsumer, setConsumerPreferredLayers,
// leaveRoom (unless --no-leave-room).
// It sends a `newConsumer` REQUEST to a peer for each producer of the other joined peers, and the
// notifications newPeer, peerClosed, consumerClosed.
//
// Options (the ways real rooms differ):
//   --port N             listen port (0: any free one); the first stdout line is {"port": N}
//   --resume server      resume a consumer as soon as the peer answered newConsumer (what
//                        mediasoup-demo does); default "client": wait for resumeConsumer
//   --no-leave-room      refuse leaveRoom as an unknown request (mediasoup-demo has none)
//   --refuse METHOD      answer METHOD with an error (e.g. produce), repeatable
//   --force-tcp          WebRTC transports with TCP candidates only
//   --announced-ip IP    the address the transports' ICE candidates name (a room behind NAT)
//
// GET /subject?roomId=&peerId= is the browser subject's page (subject/, bundled by esbuild).
//
// Every request and room event is written to stdout as one JSON line ({"event": ...}) so a test
// can follow the room (who connected with which Host header, joined, produced, consumed, left).

const fs = require('fs');
const http = require('http');
const path = require('path');
const url = require('url');
const mediasoup = require('mediasoup');
const protoo = require('protoo-server');

const MEDIA_CODECS = [
  { kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2 },
  {
    kind: 'video',
    mimeType: 'video/VP8',
    clockRate: 90000,
    parameters: { 'x-google-start-bitrate': 1000 },
  },
];

function parseArgs(argv) {
  const options = {
    port: 0, resume: 'client', leaveRoom: true, refuse: new Set(), forceTcp: false, announcedIp: null,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--port') options.port = Number(argv[++i]);
    else if (arg === '--resume') options.resume = argv[++i];
    else if (arg === '--no-leave-room') options.leaveRoom = false;
    else if (arg === '--refuse') options.refuse.add(argv[++i]);
    else if (arg === '--force-tcp') options.forceTcp = true;
    else if (arg === '--announced-ip') options.announcedIp = argv[++i];
    else throw new Error(`unknown option ${arg}`);
  }
  if (!['client', 'server'].includes(options.resume)) throw new Error('--resume client|server');
  return options;
}

const options = parseArgs(process.argv.slice(2));

function emit(event, fields) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
}

class Room {
  constructor(id, router) {
    this.id = id;
    this.router = router;
    this.protooRoom = new protoo.Room();
  }

  joinedPeers(except) {
    return this.protooRoom.peers.filter((peer) => peer.data.joined && peer !== except);
  }

  async addPeer(peerId, transport) {
    const existing = this.protooRoom.getPeer(peerId);
    if (existing) existing.close(); // the same peer again (a reconnect): the new socket wins
    const peer = await this.protooRoom.createPeer(peerId, transport);
    Object.assign(peer.data, {
      joined: false,
      displayName: '',
      device: {},
      rtpCapabilities: null,
      transports: new Map(),
      producers: new Map(),
      consumers: new Map(),
    });
    peer.on('request', (request, accept, reject) => {
      emit('request', { roomId: this.id, peerId, method: request.method });
      this.handle(peer, request)
        .then((data) => accept(data))
        .catch((error) => {
          emit('refused', { roomId: this.id, peerId, method: request.method, reason: String(error.message) });
          reject(500, String(error.message));
        });
    });
    peer.on('close', () => {
      emit('peerClosed', { roomId: this.id, peerId });
      for (const t of peer.data.transports.values()) t.close();
      if (peer.data.joined) {
        for (const other of this.joinedPeers(peer)) other.notify('peerClosed', { peerId }).catch(() => {});
      }
    });
    emit('connected', { roomId: this.id, peerId });
  }

  async handle(peer, request) {
    const data = request.data || {};
    if (options.refuse.has(request.method)) throw new Error(`${request.method} refused by this room`);
    switch (request.method) {
      case 'getRouterRtpCapabilities':
        return this.router.rtpCapabilities;
      case 'createWebRtcTransport': {
        const forceTcp = options.forceTcp || Boolean(data.forceTcp);
        const transport = await this.router.createWebRtcTransport({
          listenIps: [{ ip: '127.0.0.1', announcedIp: options.announcedIp }],
          enableUdp: !forceTcp,
          enableTcp: true,
          preferUdp: !forceTcp,
          initialAvailableOutgoingBitrate: 1000000,
          appData: { producing: Boolean(data.producing), consuming: Boolean(data.consuming) },
        });
        peer.data.transports.set(transport.id, transport);
        return {
          id: transport.id,
          iceParameters: transport.iceParameters,
          iceCandidates: transport.iceCandidates,
          dtlsParameters: transport.dtlsParameters,
          sctpParameters: transport.sctpParameters,
        };
      }
      case 'connectWebRtcTransport': {
        const transport = this.transport(peer, data.transportId);
        await transport.connect({ dtlsParameters: data.dtlsParameters });
        return {};
      }
      case 'join': {
        if (peer.data.joined) throw new Error('already joined');
        if (!data.rtpCapabilities) throw new Error('join needs rtpCapabilities');
        peer.data.joined = true;
        peer.data.displayName = data.displayName || '';
        peer.data.device = data.device || {};
        peer.data.rtpCapabilities = data.rtpCapabilities;
        const others = this.joinedPeers(peer);
        emit('joined', { roomId: this.id, peerId: peer.id });
        // consume what the peers already in the room produce (after the answer went out)
        setImmediate(() => {
          for (const other of others) {
            for (const producer of other.data.producers.values()) this.consume(peer, other, producer);
            other
              .notify('newPeer', { id: peer.id, displayName: peer.data.displayName, device: peer.data.device })
              .catch(() => {});
          }
        });
        return {
          peers: others.map((p) => ({ id: p.id, displayName: p.data.displayName, device: p.data.device })),
        };
      }
      case 'produce': {
        if (!peer.data.joined) throw new Error('peer not yet joined');
        const transport = this.transport(peer, data.transportId);
        const producer = await transport.produce({
          kind: data.kind,
          rtpParameters: data.rtpParameters,
          appData: { ...(data.appData || {}), peerId: peer.id },
        });
        peer.data.producers.set(producer.id, producer);
        // per encoding (simulcast layer) the score mediasoup gives what it receives (0: not sent)
        producer.on('score', (score) => emit('producerScore', { roomId: this.id, peerId: peer.id, score }));
        emit('produced', {
          roomId: this.id,
          peerId: peer.id,
          kind: producer.kind,
          producerId: producer.id,
          type: producer.type,
          encodings: producer.rtpParameters.encodings.length,
        });
        setImmediate(() => {
          for (const other of this.joinedPeers(peer)) this.consume(other, peer, producer);
        });
        return { id: producer.id };
      }
      case 'closeProducer': {
        const producer = peer.data.producers.get(data.producerId);
        if (!producer) throw new Error(`producer "${data.producerId}" not found`);
        producer.close();
        peer.data.producers.delete(producer.id);
        return {};
      }
      case 'pauseConsumer':
        await this.consumer(peer, data.consumerId).pause();
        return {};
      case 'resumeConsumer':
        await this.consumer(peer, data.consumerId).resume();
        emit('resumed', { roomId: this.id, peerId: peer.id, consumerId: data.consumerId, by: 'client' });
        return {};
      case 'setConsumerPreferredLayers':
        await this.consumer(peer, data.consumerId).setPreferredLayers({
          spatialLayer: data.spatialLayer,
          temporalLayer: data.temporalLayer,
        });
        return {};
      case 'leaveRoom':
        if (!options.leaveRoom) break;
        setImmediate(() => peer.close());
        return {};
      default:
        break;
    }
    throw new Error(`unknown request.method "${request.method}"`);
  }

  transport(peer, id) {
    const transport = peer.data.transports.get(id);
    if (!transport) throw new Error(`transport "${id}" not found`);
    return transport;
  }

  consumer(peer, id) {
    const consumer = peer.data.consumers.get(id);
    if (!consumer) throw new Error(`consumer "${id}" not found`);
    return consumer;
  }

  // `consumer` peer receives `producer` of `producerPeer`: created paused, offered with a
  // newConsumer request, resumed by us (--resume server) or by the peer's resumeConsumer.
  async consume(consumerPeer, producerPeer, producer) {
    const capabilities = consumerPeer.data.rtpCapabilities;
    if (!capabilities || !this.router.canConsume({ producerId: producer.id, rtpCapabilities: capabilities })) {
      emit('cannotConsume', { roomId: this.id, peerId: consumerPeer.id, producerId: producer.id });
      return;
    }
    const transport = [...consumerPeer.data.transports.values()].find((t) => t.appData.consuming);
    if (!transport) return;
    let consumer;
    try {
      consumer = await transport.consume({ producerId: producer.id, rtpCapabilities: capabilities, paused: true });
    } catch (error) {
      emit('consumeFailed', { roomId: this.id, peerId: consumerPeer.id, reason: String(error.message) });
      return;
    }
    consumerPeer.data.consumers.set(consumer.id, consumer);
    const closed = () => {
      consumerPeer.data.consumers.delete(consumer.id);
      if (!consumerPeer.closed) consumerPeer.notify('consumerClosed', { consumerId: consumer.id }).catch(() => {});
    };
    consumer.on('transportclose', () => consumerPeer.data.consumers.delete(consumer.id));
    consumer.on('producerclose', closed);
    try {
      await consumerPeer.request('newConsumer', {
        peerId: producerPeer.id,
        producerId: producer.id,
        id: consumer.id,
        kind: consumer.kind,
        rtpParameters: consumer.rtpParameters,
        type: consumer.type,
        appData: producer.appData,
        producerPaused: consumer.producerPaused,
      });
    } catch (error) {
      emit('newConsumerRefused', { roomId: this.id, peerId: consumerPeer.id, reason: String(error) });
      consumer.close();
      consumerPeer.data.consumers.delete(consumer.id);
      return;
    }
    emit('consuming', {
      roomId: this.id,
      peerId: consumerPeer.id,
      producerPeerId: producerPeer.id,
      kind: consumer.kind,
      consumerId: consumer.id,
      type: consumer.type,
    });
    // which simulcast layer mediasoup forwards (null: none, e.g. paused or not enough bandwidth)
    consumer.on('layerschange', (layers) =>
      emit('layerschange', { roomId: this.id, peerId: consumerPeer.id, consumerId: consumer.id, layers: layers || null }));
    if (options.resume === 'server') {
      await consumer.resume();
      emit('resumed', { roomId: this.id, peerId: consumerPeer.id, consumerId: consumer.id, by: 'server' });
    }
  }
}

async function main() {
  const worker = await mediasoup.createWorker({ logLevel: 'warn', rtcMinPort: 40000, rtcMaxPort: 49999 });
  worker.on('died', () => {
    emit('workerDied', {});
    process.exit(1);
  });
  const rooms = new Map();
  const roomFor = async (roomId) => {
    let room = rooms.get(roomId);
    if (!room) {
      room = new Room(roomId, await worker.createRouter({ mediaCodecs: MEDIA_CODECS }));
      rooms.set(roomId, room);
    }
    return room;
  };
  // the browser subject's page (subject/index.html and its bundle build/subject.js)
  const pages = {
    '/subject': ['text/html', path.join(__dirname, 'subject', 'index.html')],
    '/subject.js': ['text/javascript', path.join(__dirname, 'build', 'subject.js')],
  };
  const server = http.createServer((req, res) => {
    const page = pages[url.parse(req.url).pathname];
    if (!page || !fs.existsSync(page[1])) {
      res.writeHead(404);
      res.end();
      return;
    }
    res.writeHead(200, { 'Content-Type': page[0] });
    res.end(fs.readFileSync(page[1]));
  });
  const ws = new protoo.WebSocketServer(server, { maxReceivedFrameSize: 960000, maxReceivedMessageSize: 960000 });
  ws.on('connectionrequest', (info, accept, reject) => {
    // the Host header the peer sent (a client that pins a checked address must keep the name)
    emit('connectionrequest', { host: info.request.headers.host || null });
    const query = url.parse(info.request.url, true).query;
    const roomId = query.roomId;
    const peerId = query.peerId;
    if (!roomId || !peerId) {
      reject(400, 'roomId and peerId required');
      return;
    }
    roomFor(String(roomId))
      .then((room) => room.addPeer(String(peerId), accept()))
      .catch((error) => {
        emit('error', { reason: String(error.message) });
        reject(500, String(error.message));
      });
  });
  server.listen(options.port, '127.0.0.1', () => {
    process.stdout.write(JSON.stringify({ port: server.address().port, mediasoup: mediasoup.version }) + '\n');
  });
  const stop = () => {
    worker.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((error) => {
  process.stderr.write(`room server failed: ${error.stack || error}\n`);
  process.exit(1);
});
