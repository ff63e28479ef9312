"""Composition root of the matcher worker."""

from __future__ import annotations

import asyncio
import logging

from faststream import FastStream
from faststream.rabbit import RabbitMessage

from contracts.commands import CompareFaces, MatchReferences
from contracts.envelope import Event
from contracts.events import FacesCompared, ReferencesMatched
from contracts.routing import MATCHER_COMPARE, MATCHER_REFERENCES, EventKey
from faces.packs import load_pack
from infra.broker import COMMANDS, create_broker, declare_topology, queue_for
from infra.publisher import Publisher, to_client
from infra.settings import Settings
from infra.storage import open_store
from services.matcher.adapters import OnnxFaceEngine, StoredImages
from services.matcher.handlers import handle_compare, handle_match_references
from services.matcher.ports import FaceEngine, ImageSource

log = logging.getLogger("faceproof.matcher")


def build_app(settings: Settings, *, engine: FaceEngine, images: ImageSource) -> FastStream:
    """Wire the handlers to the broker; resources are created by the caller."""
    broker = create_broker(settings)
    publisher = Publisher.for_settings(broker, settings)

    async def answer(event: Event, message: RabbitMessage, key: str) -> None:
        """To the asker's ``reply_to`` (the gateway's RPC, or an upstream client's queue that the
        ingress passed on), else as an event. A reply queue that refuses it costs only the reply:
        raised, the compare was redone until its images were dead-lettered (``to_client``)."""
        if not message.reply_to:
            await publisher.event(event, key)
            return
        replying = broker.publish(
            event,
            routing_key=message.reply_to,
            correlation_id=message.correlation_id,
            message_id=event.message_id,
        )
        await to_client(replying, f"the answer {event.message_id}")

    @broker.subscriber(
        queue_for(MATCHER_COMPARE, delivery_limit=settings.delivery_limit),
        COMMANDS,
        no_reply=True,
        title="CompareFaces",
        description="Compare the largest source face with every target face; FacesCompared to reply_to "
        "(else as an event).",
    )
    async def on_compare(command: CompareFaces, message: RabbitMessage) -> None:
        event: FacesCompared = await handle_compare(command, engine=engine, images=images)
        await answer(event, message, EventKey.FACES_COMPARED)

    @broker.subscriber(
        queue_for(MATCHER_REFERENCES, delivery_limit=settings.delivery_limit),
        COMMANDS,
        no_reply=True,
        title="MatchReferences",
        description="Is the probe any of the references? Each reference scored, then fused (MAX or MEAN); "
        "ReferencesMatched to reply_to (else as an event).",
    )
    async def on_match_references(command: MatchReferences, message: RabbitMessage) -> None:
        event: ReferencesMatched = await handle_match_references(command, engine=engine, images=images)
        await answer(event, message, EventKey.REFERENCES_MATCHED)

    app = FastStream(broker, logger=logging.getLogger("faceproof.app"))

    @app.after_startup
    async def declare() -> None:
        await declare_topology(
            broker, (MATCHER_COMPARE, MATCHER_REFERENCES), delivery_limit=settings.delivery_limit
        )

    return app


async def load_engine(settings: Settings) -> OnnxFaceEngine:
    """The model pack loaded and warmed up, behind the engine the handlers use."""
    pipeline = await asyncio.to_thread(
        load_pack,
        settings.model_pack,
        settings.resolved_models_dir,
        prefer_gpu=settings.prefer_gpu,
        threads=settings.resolved_inference_threads,
        verify_checksums=settings.verify_model_checksums,
        embedder_precision=settings.embedder_precision,
    )
    await asyncio.to_thread(pipeline.warm_up)
    return OnnxFaceEngine(
        pipeline,
        max_pixels=settings.max_image_pixels,
        workers=settings.matcher_concurrency,
        batch_size=settings.matcher_batch_size,
        batch_wait_s=settings.matcher_batch_wait_ms / 1000,
    )


async def serve(settings: Settings) -> None:
    """Load the model pack, then consume until stopped."""
    engine = await load_engine(settings)
    store = open_store(settings.resolved_storage_url)
    log.info("model pack %s loaded (%s)", engine.model.pack, engine.model.licence)
    try:
        await build_app(settings, engine=engine, images=StoredImages(store)).run()
    finally:
        await engine.close()
