/*
 * aims_events.h -- a client's subscription to what happens in a registry
 * (docs/EVENTS.md).
 *
 * Why: hosts, dashboards and the HTTP status page want to react to instances
 * joining, leaving, expiring, changing weight and new model versions appearing
 * without polling lookups. The registry already numbers every change (its
 * revision) and answers "changes since revision R" (the "changes" method of
 * the aims.registry service, svc_registry.c); an event watch follows that
 * stream from a revision the caller chooses and turns it into typed events.
 *
 * How: aims_client_watch starts one thread per watch. It polls the registry
 * service at `url` every AIMS_CLIENT_SYNC_MS of the client (its own private
 * connection, with the client's TLS config), and calls the callback on that
 * thread, one event at a time, in revision order. A watch is resumable: keep
 * the last (epoch, revision) you handled and pass them to the next
 * aims_client_watch -- after a client restart every event after that
 * revision arrives exactly once. When the registry cannot replay from there
 * (its history of 4096 changes was compacted, or it restarted: the epoch
 * differs), the watch delivers AIMS_EVENT_RESYNC and then the full live set as
 * AIMS_EVENT_PUT events ("forget what you knew; this is the state now").
 * A fresh watch (epoch 0) therefore starts with RESYNC + snapshot.
 *
 * Threads. The callback runs on the watch's own thread, never on a thread of
 * the client's calls: a slow callback delays the events after it, nothing
 * else (client calls, other watches, the client's registry mirror). It should
 * still return promptly (queue heavy work elsewhere): while it runs no further
 * event of this watch is fetched. It may call into the client, and may
 * destroy its own watch (no further event follows; the watch's thread frees it
 * after the callback returned).
 */
#ifndef AIMS_EVENTS_H
#define AIMS_EVENTS_H

#include "aims_orch.h"
#include "aims_svc.h"

AIMS_EXTERN_C_BEGIN

/** A running event watch (opaque); aims_event_watch_destroy stops and frees it. */
typedef struct aims_event_watch aims_event_watch;

/**
 * One registry event, valid only during the callback.
 *
 * Kinds: AIMS_EVENT_PUT (an instance joined), AIMS_EVENT_DELETE (left),
 * AIMS_EVENT_EXPIRE (ejected: its lease expired), AIMS_EVENT_WEIGHT (an
 * instance's weight changed; @c weight is the registry's current value),
 * AIMS_EVENT_VERSION (the first instance of a "name@version" service appeared:
 * a model version was published; it follows that PUT with the same revision),
 * AIMS_EVENT_RESYNC (a snapshot follows: drop the state built so far),
 * AIMS_EVENT_MODEL (a lifecycle step of an infer service: @c service is the
 * infer service, @c address the text "action=A version=NAME@V by=WHO detail=..."
 * with A one of load, unload, weight, rollback, deploy, promote),
 * AIMS_EVENT_JOB (a training job's state: @c service is the train service,
 * @c address "state=S epoch=E loss=L node=N [detail=...] job=ID" with S one of
 * queued, running, resumed, progress, done, failed, cancelled; ID, the exact
 * job id, runs to the end of the text). MODEL and JOB events come from
 * registry records the owning node writes (docs/EVENTS.md), so they are
 * ordered with every other event, resumable, and after a RESYNC the snapshot
 * holds the latest one of each subject.
 */
typedef struct aims_event {
    aims_event_kind kind; /**< what happened (see above) */
    uint64_t epoch;     /**< registry incarnation; pass back to resume */
    uint64_t revision;  /**< registry revision of this change; pass back to resume */
    aims_instance id;   /**< instance id (0 for RESYNC) */
    const char *service; /**< "name" or "name@version" ("" for RESYNC) */
    const char *address; /**< transport address ("" for RESYNC) */
    uint32_t weight;     /**< weight for PUT / WEIGHT, else 0 */
} aims_event;

/** Event callback: one call per event, in order, on the watch's thread. */
typedef void (*aims_event_fn)(void *user, const aims_event *ev);

/**
 * @brief Watch the registry service at @p url from (@p epoch, @p from_revision).
 *
 * Events with a revision above @p from_revision are delivered, in order, on
 * a thread of the watch; when the registry's epoch is not @p epoch (a fresh
 * watch passes 0, or the registry restarted) or it no longer holds that
 * history, AIMS_EVENT_RESYNC and a snapshot come first. An unreachable
 * registry is not an error: the watch keeps polling every AIMS_CLIENT_SYNC_MS.
 * @param c     client whose AIMS_CLIENT_SYNC_MS and TLS config the watch uses
 *              (read once; the watch does not use @p c afterwards).
 * @param url   registry service: tcp://, ipc://, inproc://, tls:// or aims://
 *              (the same as aims_client_join's registry-service URLs).
 * @param fn    callback (see aims_event_fn); @p user is passed to it.
 * @param out   [out] the watch; stop it with aims_event_watch_destroy.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_INVAL (url), AIMS_E_NOMEM,
 *         AIMS_E_BACKEND (thread).
 * @note Thread safety: any thread, on a shared client.
 * @since 0.1
 */
AIMS_API aims_status aims_client_watch(aims_client *c, const char *url, uint64_t epoch,
                                       uint64_t from_revision, aims_event_fn fn, void *user,
                                       aims_event_watch **out);

/**
 * @brief Stop a watch and free it: no callback runs after this returns (a
 * callback in progress is waited for). From inside the watch's own callback it
 * stops the watch without waiting: no event follows the current one, and the
 * watch's thread frees it when the callback returns. NULL is a no-op.
 * @since 0.1
 */
AIMS_API void aims_event_watch_destroy(aims_event_watch *w);

/**
 * @brief Why the watch's last poll failed ("" after a successful one, or for
 * a bad handle): the registry unreachable, a malformed reply...
 * @note The text is copied on each call: do not call it from two threads at once.
 * @since 0.1
 */
AIMS_API const char *aims_event_watch_errmsg(aims_event_watch *w);

AIMS_EXTERN_C_END

#endif /* AIMS_EVENTS_H */
