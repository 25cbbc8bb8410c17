"""The operations behind the routes, in the order that keeps them durable and consistent.

Writes (synchronous, run in the thread pool): validate -> embed (outside any lock) -> under the
one write lock: commit to the store, then apply in memory. A reload replays the store and swaps
models under the same lock, so no write can fall between the replay and the swap.
Reads (asynchronous) never take the write lock: the cache is asked on the event loop, and the
misses of concurrent requests are ranked together (one FAISS search for the batch, see
``service.batching``), on the event loop while that is cheap, in a worker thread when it is not
(see ``RecommendationService._answer_misses``).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from eventlog.store import Store, StoredItem
from service import schemas
from service.batching import MicroBatcher
from service.cache import Cache
from service.errors import NotFound, NotReady, invalid, unreadable
from service.index import IndexConfig, choose_device, gpu_count, set_threads
from service.metrics import Metrics
from service.model import ServingModel
from service.ranking import Answer, Query, Ranked, listed_json, popular_json, timed_rank_batch
from service.responses import CACHE_KIND, recommendation_json
from service.served import ServedLog
from service.settings import Settings
from service.sync import ChangeFeed, replay

log = logging.getLogger(__name__)
# A batch of misses ranks on the event loop while it is expected to take less CPU than this: a
# thread hop costs ~0.3 ms of CPU (measured), more than an exact search over ~10^4 items; a
# slower batch (big exact index, heavy user tower) goes to the thread pool so it cannot stall
# the loop.
INLINE_RANK_S = 0.0005
RANK_SMOOTHING = 0.1  # weight of the newest duration in the running average


class LoadError(RuntimeError):
    """A bundle could not be loaded; the previous one (if any) is still served."""


class RecommendationService:
    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self.store = Store(settings.database_url, settings.table_prefix)
        self.cache = Cache(
            settings.redis_url,
            ttl_s=settings.cache_ttl_s,
            local_items=settings.local_cache_items,
            prefix=settings.cache_prefix,
            timeout_s=settings.redis_timeout_s,
            backoff_s=settings.redis_backoff_s,
            on_error=metrics.redis_errors.inc,
        )
        set_threads(settings.faiss_threads)
        self.index_config = IndexConfig(
            kind=settings.index_type,
            device=choose_device(settings.index_device, gpu_count()),
            nlist=settings.ivf_nlist,
            nprobe=settings.ivf_nprobe,
            pq_bytes=settings.pq_bytes,
            hnsw_m=settings.hnsw_m,
            ef_construction=settings.hnsw_ef_construction,
            ef_search=settings.hnsw_ef_search,
            recall_target=settings.index_recall,
            exact_max_items=settings.index_exact_max_items,
            memory_gb=settings.index_memory_gb,
            hnsw_max_items=settings.index_hnsw_max_items,
        )
        self.model: ServingModel | None = None
        self.served_path: Path | None = None  # the resolved folder of the served bundle
        self._followed: Path | None = None  # what RECSYS_BUNDLE resolved to at the last poll
        # (folder, since when (monotonic), why): what RECSYS_BUNDLE named and failed to load,
        # until a bundle loads; GET /readyz turns 503 once it is older than the grace period
        self.refused: tuple[Path, float, str] | None = None
        self.clock = time.monotonic
        self.catalog_generation = 0  # bumped by every delete; part of every cache key
        self._write_lock = threading.Lock()
        self.feed = ChangeFeed()  # the other replicas' writes (see ``follow_changes``)
        self.served = ServedLog(self.store, settings, metrics)  # the online evaluation's log
        self._reload_lock = threading.Lock()
        # Running average of CPU seconds per ranked request; starts in the pool.
        self._rank_s = 2 * INLINE_RANK_S
        # Concurrent misses are answered together (see ``_answer_misses``).
        self._misses = MicroBatcher(self._answer_misses, on_batch=metrics.miss_batch.observe)

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Create the tables, then serve the configured bundle plus what the store holds."""
        if self.settings.api_key is None:
            log.warning("RECSYS_API_KEY is not set: writes are %s", "open to anyone who can "
                        "reach this port (RECSYS_OPEN_WRITES)" if self.settings.open_writes
                        else "refused (set RECSYS_API_KEY, or RECSYS_OPEN_WRITES for local use)")
        self.store.create()
        self.served.start()
        self.catalog_generation = self.store.catalog_generation()
        self.feed.cursor = self.store.last_change_id()  # the replay below covers everything
        self._followed = self.settings.bundle.resolve()
        try:
            self.reload()
        except LoadError as error:  # stay up (not ready); POST /admin/reload can fix it
            self.refused = (self._followed, self.clock(), str(error))
            log.error("%s", error)

    def follow(self) -> bool:
        """Load RECSYS_BUNDLE again if it now resolves to another folder (a publish or a
        rollback moved its ``current`` link); True when a new bundle is served. A manual
        reload of another path stays until the link moves again."""
        target = self.settings.bundle.resolve()
        if target == self._followed:
            return False
        self._followed = target  # a broken target is tried once, not at every poll
        try:
            self.reload(target)
        except LoadError as error:
            self.refused = (target, self.clock(), str(error))
            log.error("%s", error)
            return False
        return True

    async def close(self) -> None:
        await run_in_threadpool(self.served.close)
        await self.cache.close()
        self.store.close()

    def require_model(self) -> ServingModel:
        model = self.model
        if model is None:
            raise NotReady("no bundle loaded yet (see GET /readyz and POST /admin/reload)")
        return model

    def reload(self, path: str | Path | None = None) -> schemas.ReloadOut:
        """Load a bundle and swap it in atomically; on failure the old one stays."""
        # Resolved first: a `current` link may move while the files are read.
        path = (Path(path) if path else self.settings.bundle).resolve()
        with self._reload_lock:
            previous = self.model
            try:
                model = ServingModel.load(
                    path, self.index_config, verify=self.settings.verify_bundle,
                    history_len=self.settings.history_len, onnx_threads=self.settings.onnx_threads,
                    text_precision=self.settings.text_tower_precision,
                )
            except Exception as error:  # any broken bundle must leave the served one alone
                self.metrics.reloads.labels(result="failed").inc()
                kept = previous.version if previous else "nothing"
                if isinstance(error, PermissionError):
                    error = unreadable(path, error)
                raise LoadError(f"cannot load bundle {path}: {error} (still serving {kept})") \
                    from error
            previous_version = previous.version if previous else None
            with self._write_lock:
                replay(self.store, model)
                self.catalog_generation = self.store.catalog_generation()
                self.model = model  # requests in flight keep their reference to the old one
                self.served_path = path
                # a manual reload of another folder overrides the link until it moves again
                self.refused = None
            del previous  # no reference of ours may keep the old bundle alive through the freeze
            freeze_heap()
            self.metrics.reloads.labels(result="ok").inc()
            self.metrics.set_model(model.version, model.model_name)
            self.metrics.index_items.set(len(model.index))
            plan = model.index.plan
            log.info("serving bundle %s (%s, %d items; index %s %s, Recall@100 %s, %.1f s: %s)",
                     model.version, path, len(model.index), plan.kind, plan.params,
                     plan.recall, plan.build_s, plan.reason)
            return schemas.ReloadOut(
                model_version=model.version,
                previous_version=previous_version,
                items=len(model.index),
            )

    # ---- change feed -------------------------------------------------------------------

    def follow_changes(self) -> int:
        """Apply the other replicas' writes logged since the last call; returns how many
        (:class:`service.sync.ChangeFeed`)."""
        model = self.model
        if model is None:
            return 0
        with self._write_lock:
            applied, deleted = self.feed.follow(self.store, model)
            if deleted:
                self.catalog_generation = self.store.catalog_generation()
        return applied

    # ---- items -------------------------------------------------------------------------

    def upsert_items(self, items: Sequence[schemas.ItemIn]) -> schemas.ItemsOut:
        if len(items) > self.settings.max_batch:
            raise invalid(("body", "items"), f"batch of {len(items)} items exceeds the limit of "
                          f"{self.settings.max_batch} (RECSYS_MAX_BATCH)")
        while True:
            model = self.require_model()
            model.validate_items([(i.item_id, i.features) for i in items])
            features, embeddings, states = model.embed_posted([i.features for i in items],
                                                              [i.text for i in items])
            with self._write_lock:
                if self.model is not model:
                    continue  # a reload swapped bundles meanwhile: embed with the new one
                ids = [i.item_id for i in items]
                self.store.upsert_items([
                    StoredItem(item_id, features[row], model.layout, embeddings[row],
                               states[row], model.version, text=items[row].text)
                    for row, item_id in enumerate(ids)
                ], origin=self.feed.origin)
                model.apply_items(ids, embeddings, states)
                break
        self.metrics.items_ingested.inc(len(items))
        self.metrics.index_items.set(len(model.index))
        return schemas.ItemsOut(upserted=len(items), model_version=model.version)

    def get_item(self, item_id: str) -> schemas.ItemOut:
        model = self.require_model()
        if not model.has_item(item_id):
            raise NotFound(f"unknown item {item_id!r}")
        if not model.is_online_item(item_id):
            return schemas.ItemOut(item_id=item_id, source="bundle", model_version=model.version)
        stored = self.store.get_item(item_id)
        if stored is None or stored.deleted or stored.features is None:
            raise NotFound(f"unknown item {item_id!r}")
        return schemas.ItemOut(
            item_id=item_id, source="online", model_version=model.version,
            features=model.split_features(stored.features, stored.layout),
            updated_at=stored.updated_at,
        )

    def delete_item(self, item_id: str) -> None:
        with self._write_lock:
            model = self.require_model()
            if not model.has_item(item_id):
                raise NotFound(f"unknown item {item_id!r}")
            generation = self.store.delete_item(item_id, origin=self.feed.origin)
            model.apply_delete(item_id)
            # After the index: a request that sees the new generation searches without the item.
            self.catalog_generation = generation
        self.metrics.items_deleted.inc()
        self.metrics.index_items.set(len(model.index))

    # ---- interactions ------------------------------------------------------------------

    def add_interaction(self, body: schemas.InteractionIn) -> schemas.InteractionOut:
        with self._write_lock:
            model = self.require_model()
            if not model.has_item(body.item_id):  # a well-formed reference to nothing: 404
                raise NotFound(f"unknown item {body.item_id!r}")
            logged_at = self.store.add_interaction(body.user_id, body.item_id, body.ts,
                                                   origin=self.feed.origin)
            model.apply_interaction(body.user_id, body.item_id)
        self.metrics.interactions.inc()
        return schemas.InteractionOut(user_id=body.user_id, item_id=body.item_id,
                                      logged_at=logged_at)

    # ---- recommendations ---------------------------------------------------------------

    async def recommend_user(self, user_id: str, k: int, exclude: list[str] | None = None,
                             offset: int = 0) -> bytes:
        """The JSON body of a ``schemas.RecommendationOut``."""
        return await self._recommend(self.require_model(), user_id, [], exclude or [], k, offset)

    async def recommend(self, body: schemas.RecommendIn) -> bytes:
        """The JSON body of a ``schemas.RecommendationOut``."""
        model = self.require_model()
        unknown = [i for i, item_id in enumerate(body.history) if not model.has_item(item_id)]
        if unknown:  # well-formed ids of nothing the service knows: 404, like an unknown user
            where = ", ".join(f"history[{i}]" for i in unknown[:10])
            raise NotFound(f"unknown item {body.history[unknown[0]]!r} at {where}"
                           + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""))
        return await self._recommend(model, body.user_id, body.history, body.exclude, body.k,
                                     body.offset)

    async def _recommend(
        self, model: ServingModel, user_id: str | None, history: list[str], exclude: list[str],
        k: int, offset: int = 0,
    ) -> bytes:
        if not history and (user_id is None or not model.has_user(user_id)):
            if self.settings.unknown_user == "popular":
                items = popular_json(model, k, offset, exclude)
                return self.served.note(user_id, model.version, recommendation_json(
                    user_id, model.version, False, b"popular", items))
            raise NotFound(f"unknown user {user_id!r} without history: send POST /recommend "
                           "with a `history`, or log interactions first")
        # Read the generations before searching: a delete or interaction that lands later
        # changes the key, so what is cached under this key was computed no earlier than it.
        parts = (model.version, self.catalog_generation, user_id, model.generation(user_id), k,
                 offset, tuple(history), tuple(sorted(set(exclude))))
        body = self.cache.get_local(parts)  # the whole response, as served from cache
        if body is not None:
            self.metrics.cache_result("memory")
            return self.served.note(user_id, model.version, body)
        key = self.cache.key(CACHE_KIND, *parts)
        answer = await self._misses(Query(model, user_id, history, exclude, k, key, offset))
        if isinstance(answer, Exception):
            raise answer
        source, items, cached = answer
        self.cache.set_local(parts, recommendation_json(user_id, model.version, True, source,
                                                        items))
        return self.served.note(user_id, model.version, recommendation_json(
            user_id, model.version, cached, source, items))

    async def _answer_misses(self, queries: list[Query]) -> list[Answer | Exception]:
        """What the memory layer lacked, for a batch of requests: one Redis MGET, one ranking
        of what Redis lacks too, one Redis write of the new lists (behind the answers)."""
        found = await self.cache.get_many([query.key for query in queries])
        answers: list[Answer | Exception | None] = []  # None: to be ranked
        missing: list[int] = []
        for position, value in enumerate(found or [None] * len(queries)):
            if value is None:
                self.metrics.cache_result("miss" if found is not None else "bypass")
                missing.append(position)
                answers.append(None)
            else:  # b"<source>\n<items JSON>", spliced into the response without parsing
                self.metrics.cache_result("redis")
                source, _, items = value.partition(b"\n")
                answers.append((source, items, True))
        ranked = await self._rank([queries[position] for position in missing]) if missing else []
        writes = []
        for position, result in zip(missing, ranked, strict=True):
            if isinstance(result, Exception):
                answers[position] = result
                continue
            hits, source_name = result
            source, items = source_name.encode(), listed_json(queries[position], hits)
            answers[position] = (source, items, False)
            writes.append((queries[position].key, source + b"\n" + items))
        await self.cache.store(writes)  # written behind: the answer does not wait for Redis
        return answers  # type: ignore[return-value]  # every None was ranked above

    async def _rank(self, queries: list[Query]) -> list[Ranked | Exception]:
        """``rank_batch`` inline or in a worker thread, whichever recent durations call for."""
        if self._rank_s * len(queries) < INLINE_RANK_S:
            results, seconds = timed_rank_batch(queries)
        else:
            results, seconds = await run_in_threadpool(timed_rank_batch, queries)
        self._note_rank(seconds / len(queries))
        return results

    def _note_rank(self, seconds: float) -> None:
        self._rank_s += RANK_SMOOTHING * (seconds - self._rank_s)

    # ---- health ------------------------------------------------------------------------

    async def readiness(self) -> schemas.Ready:
        model = self.model
        store_ok = await run_in_threadpool(self.store.ping)
        reasons, stale = [], False
        refused = self.refused
        if model is None:
            reasons.append("no bundle loaded" + (f": {refused[2]}" if refused else ""))
        elif refused is not None:  # still serving the previous bundle: ready for a while
            target, since, why = refused
            age, grace = self.clock() - since, self.settings.bundle_failure_grace_s
            stale = age > grace
            reasons.append(
                f"{self.settings.bundle} names {target.name}, which failed to load {age:.0f} s "
                f"ago ({why}); serving {model.version} instead, "
                + ("past" if stale else "within") + f" the {grace:g} s grace "
                "(RECSYS_BUNDLE_FAILURE_GRACE_S)")
        if not store_ok:
            reasons.append("the SQL store does not answer")
        return schemas.Ready(
            ready=model is not None and store_ok and not stale,
            reason="; ".join(reasons) or None,
            model_version=model.version if model else None,
            modalities=[schemas.Modality(name=m.name, dim=m.dim)
                        for m in (model.modalities if model else [])],
            index_items=len(model.index) if model else 0,
            index_type=model.index.plan.kind if model else self.index_config.kind,
            index_device=self.index_config.device,
            index=schemas.IndexReport(**model.index.plan.as_dict()) if model else None,
            store=store_ok,
            redis=await self.cache.state(),
        )


def freeze_heap() -> None:
    """Put every object alive now (the bundle's id maps, histories, sessions: millions of
    objects) out of the cyclic garbage collector's reach. Otherwise each full collection walks
    them all and stalls the event loop: p99 of a cache hit 24-30 ms instead of 1.5 ms (measured,
    ``benchmarks/serving.py --quick``). Frozen objects are still freed by reference counting;
    unfreezing first lets a collection reclaim the previous bundle's cycles."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
