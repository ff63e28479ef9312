// The subject as a real browser: joins a mediasoup room with mediasoup-client over protoo,
// produces the (fake) camera and shows the video the other peers (the call agent) send.
// Bundled by esbuild (scripts/mediasoup.sh) into build/subject.js; served by room.js at /subject.
// The page reports on window.subject: {joined, produced, consumed, framesShown, error}.
// ?simulcast=N (N >= 2): the camera is produced as N simulcast encodings (VP8), each half the
// resolution of the next (scaleResolutionDownBy ..., 4, 2, 1), as mediasoup-demo's app does.
import * as mediasoupClient from 'mediasoup-client';
import protooClient from 'protoo-client';

const state = { joined: false, produced: false, consumed: 0, framesShown: 0, error: null };
window.subject = state;

async function run() {
  const params = new URLSearchParams(location.search);
  const wsUrl = `ws://${location.host}/?roomId=${params.get('roomId')}&peerId=${params.get('peerId')}`;
  const peer = new protooClient.Peer(new protooClient.WebSocketTransport(wsUrl));
  await new Promise((resolve, reject) => {
    peer.on('open', resolve);
    peer.on('failed', reject);
  });
  const device = new mediasoupClient.Device();
  await device.load({ routerRtpCapabilities: await peer.request('getRouterRtpCapabilities') });

  const transport = async (direction) => {
    const info = await peer.request('createWebRtcTransport', {
      forceTcp: params.get('forceTcp') === '1',
      producing: direction === 'send',
      consuming: direction === 'recv',
    });
    const options = { id: info.id, iceParameters: info.iceParameters, iceCandidates: info.iceCandidates,
      dtlsParameters: info.dtlsParameters, sctpParameters: info.sctpParameters };
    const t = direction === 'send' ? device.createSendTransport(options) : device.createRecvTransport(options);
    t.on('connect', ({ dtlsParameters }, ok, fail) =>
      peer.request('connectWebRtcTransport', { transportId: t.id, dtlsParameters }).then(ok).catch(fail));
    if (direction === 'send') {
      t.on('produce', ({ kind, rtpParameters, appData }, ok, fail) =>
        peer.request('produce', { transportId: t.id, kind, rtpParameters, appData })
          .then(({ id }) => ok({ id })).catch(fail));
    }
    return t;
  };
  const send = await transport('send');
  const recv = await transport('recv');

  peer.on('request', async (request, accept, reject) => {
    if (request.method !== 'newConsumer') {
      reject(403, 'unknown request');
      return;
    }
    try {
      const d = request.data;
      const consumer = await recv.consume({ id: d.id, producerId: d.producerId, kind: d.kind, rtpParameters: d.rtpParameters });
      accept();
      state.consumed += 1;
      peer.request('resumeConsumer', { consumerId: consumer.id }).catch(() => {});
      if (consumer.kind === 'video') {
        const video = document.getElementById('remote');
        video.srcObject = new MediaStream([consumer.track]);
        const count = () => {
          state.framesShown += 1;
          video.requestVideoFrameCallback(count);
        };
        video.requestVideoFrameCallback(count);
        await video.play();
      }
    } catch (error) {
      state.error = String(error);
      reject(500, String(error));
    }
  });

  await peer.request('join', { displayName: 'subject (browser)', device: { flag: 'chromium' },
    rtpCapabilities: device.rtpCapabilities });
  state.joined = true;
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
  document.getElementById('local').srcObject = stream;
  const layers = Number(params.get('simulcast') || 0);
  const encodings = layers >= 2
    ? Array.from({ length: layers }, (_, i) => ({ scaleResolutionDownBy: 2 ** (layers - 1 - i) }))
    : undefined;
  await send.produce({ track: stream.getVideoTracks()[0], encodings,
    codecOptions: { videoGoogleStartBitrate: 1000 } });
  state.produced = true;
}

run().catch((error) => {
  state.error = String(error && error.stack ? error.stack : error);
});
