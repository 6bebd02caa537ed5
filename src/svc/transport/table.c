/*
 * table.c -- a node's or client's transports by URL scheme, and URL splitting.
 *
 * A table is a fixed array of AIMSI_MAX_TRANSPORTS slots (no allocation: the
 * owner embeds it). aimsi_ttable_init puts the built-ins tcp, ipc and tls in it;
 * hosts add their own vtables with aimsi_ttable_add, which copies the table
 * and overrides a slot of the same scheme. "inproc" is not a transport here:
 * the node and client handle inproc:// themselves (pointer hand-off), so
 * aimsi_ttable_get says AIMS_E_UNSUPPORTED for it.
 *
 * ABI. A host compiled against an older, smaller aims_transport passes its
 * own struct_size: we copy that many bytes, zero the rest, and require at
 * least the members up to `close` (the version-1 table). A vtable with another
 * version, a bad scheme or a NULL function is refused before it is stored.
 *
 * Instances are created lazily by aimsi_ttable_get with the owner's hooks and
 * max_frame, so a client that only talks inproc:// never starts an I/O thread.
 *
 * Thread safety: none inside. The owner (node, client) calls add/get/fini
 * under its own lock; the instances themselves are thread-safe. The slots'
 * vt.scheme points into the slot, so a table must not be copied by value.
 */
#include "aimsi_stream.h"

#include <stddef.h>
#include <string.h>

#define SCHEME_MAX 16u

static int scheme_char_ok(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '+' || ch == '.' ||
           ch == '-';
}

/* Length of a valid scheme at s, stopping at NUL or ':'; 0 when invalid. */
static size_t scheme_len(const char *s, int whole)
{
    size_t n = 0;
    while (s[n] != '\0' && s[n] != ':') {
        if (!scheme_char_ok(s[n]) || n >= SCHEME_MAX) {
            return 0;
        }
        n++;
    }
    if (whole && s[n] != '\0') {
        return 0;
    }
    return n;
}

aims_status aimsi_url_split(const char *url, char *scheme, size_t scheme_cap, const char **rest)
{
    if (url == NULL || scheme == NULL || rest == NULL) {
        return AIMSI_MISUSE("NULL url, scheme or rest");
    }
    const size_t n = scheme_len(url, 0);
    if (n == 0 || strncmp(url + n, "://", 3) != 0) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "\"%.80s\": expected scheme://address with a scheme of 1..16 "
                         "characters [a-z0-9+.-]",
                         url);
    }
    if (n >= scheme_cap) {
        return aimsi_err(NULL, AIMS_E_RANGE, "\"%.80s\": scheme needs %zu bytes, buffer has %zu",
                         url, n + 1, scheme_cap);
    }
    memcpy(scheme, url, n);
    scheme[n] = '\0';
    *rest = url + n + 3;
    return AIMS_OK;
}

static aimsi_tslot *find_slot(aimsi_ttable *tt, const char *scheme)
{
    for (size_t i = 0; i < tt->n; i++) {
        if (strcmp(tt->slot[i].scheme, scheme) == 0) {
            return &tt->slot[i];
        }
    }
    return NULL;
}

/* Store a validated vtable in its slot (a new one or the one it overrides). */
static void put(aimsi_ttable *tt, aimsi_tslot *s, const aims_transport *t, size_t copy)
{
    memset(&s->vt, 0, sizeof s->vt);
    memcpy(&s->vt, t, copy);
    const size_t n = strlen(t->scheme);
    memcpy(s->scheme, t->scheme, n + 1);
    s->vt.scheme = s->scheme;
    s->vt.struct_size = (uint32_t)sizeof s->vt;
    s->inst = NULL;
    (void)tt;
}

void aimsi_ttable_init(aimsi_ttable *tt, const aims_transport_hooks *hooks, uint64_t max_frame)
{
    memset(tt, 0, sizeof *tt);
    if (hooks != NULL) {
        tt->hooks = *hooks;
    }
    tt->max_frame = max_frame;
    const aims_transport *builtin[3] = {aimsi_transport_tcp(), aimsi_transport_ipc(),
                                        aimsi_transport_tls(NULL)};
    for (size_t i = 0; i < 3; i++) {
        put(tt, &tt->slot[tt->n], builtin[i], sizeof(aims_transport));
        tt->n++;
    }
}

aims_status aimsi_ttable_add(aimsi_ttable *tt, const aims_transport *t)
{
    if (tt == NULL || t == NULL) {
        return AIMSI_MISUSE("NULL table or transport");
    }
    const size_t need = offsetof(aims_transport, close) + sizeof(void (*)(void));
    if (t->struct_size < need) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "transport: struct_size %u is smaller than the version-1 table (%zu "
                         "bytes)",
                         (unsigned)t->struct_size, need);
    }
    if (t->version != AIMS_TRANSPORT_VERSION) {
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED,
                         "transport: version %u, this library speaks version %u",
                         (unsigned)t->version, AIMS_TRANSPORT_VERSION);
    }
    if (t->scheme == NULL || scheme_len(t->scheme, 1) == 0) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "transport: scheme \"%.32s\" must be 1..16 characters [a-z0-9+.-]",
                         t->scheme == NULL ? "(null)" : t->scheme);
    }
    if (strcmp(t->scheme, "inproc") == 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "transport: scheme \"inproc\" is reserved");
    }
    if (t->create == NULL || t->destroy == NULL || t->listen == NULL || t->unlisten == NULL ||
        t->dial == NULL || t->send == NULL || t->close == NULL) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "transport \"%s\": every function (create, destroy, listen, "
                         "unlisten, dial, send, close) must be set",
                         t->scheme);
    }
    aimsi_tslot *s = find_slot(tt, t->scheme);
    if (s != NULL && s->inst != NULL) {
        return aimsi_err(NULL, AIMS_E_STATE,
                         "transport \"%s\": already in use; register transports before the "
                         "first listen or call",
                         t->scheme);
    }
    if (s == NULL) {
        if (tt->n >= AIMSI_MAX_TRANSPORTS) {
            return aimsi_err(NULL, AIMS_E_RANGE, "transport \"%s\": at most %d transports",
                             t->scheme, AIMSI_MAX_TRANSPORTS);
        }
        s = &tt->slot[tt->n];
        tt->n++;
    }
    const size_t copy = t->struct_size < sizeof(aims_transport) ? t->struct_size
                                                                : sizeof(aims_transport);
    put(tt, s, t, copy);
    return AIMS_OK;
}

aims_status aimsi_ttable_get(aimsi_ttable *tt, const char *url, aimsi_tslot **out)
{
    if (tt == NULL || url == NULL || out == NULL) {
        return AIMSI_MISUSE("NULL table, url or out");
    }
    char scheme[SCHEME_MAX + 1];
    const char *rest = NULL;
    AIMSI_TRY(aimsi_url_split(url, scheme, sizeof scheme, &rest));
    aimsi_tslot *s = find_slot(tt, scheme);
    if (s == NULL) {
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED,
                         "\"%.80s\": no transport for scheme \"%s\" (register one with "
                         "aims_node_add_transport / aims_client_add_transport)",
                         url, scheme);
    }
    if (s->inst == NULL) {
        void *inst = NULL;
        AIMSI_TRY(s->vt.create(s->vt.factory_user, &tt->hooks, tt->max_frame, &inst));
        if (inst == NULL) {
            return aimsi_err(NULL, AIMS_E_INTERNAL, "transport \"%s\": create returned no instance",
                             scheme);
        }
        if (s->vt.create == aimsi_stream_create) {
            aimsi_stream_set_rx(inst, &tt->rx);
        }
        s->inst = inst;
    }
    *out = s;
    return AIMS_OK;
}

void aimsi_ttable_fini(aimsi_ttable *tt)
{
    if (tt == NULL) {
        return;
    }
    for (size_t i = 0; i < tt->n; i++) {
        if (tt->slot[i].inst != NULL) {
            tt->slot[i].vt.destroy(tt->slot[i].inst);
            tt->slot[i].inst = NULL;
        }
    }
    aims_tls_config_destroy(tt->tls); /* our reference; connections are gone */
    tt->tls = NULL;
}

aims_status aimsi_ttable_set_tls(aimsi_ttable *tt, aims_tls_config *cfg)
{
    if (tt == NULL || cfg == NULL) {
        return AIMSI_MISUSE("NULL table or TLS config");
    }
    const aims_transport *vt = aimsi_transport_tls(cfg);
    aimsi_tslot *s = find_slot(tt, "tls");
    const aims_transport *unset = aimsi_transport_tls(NULL);
    if (s != NULL && s->inst != NULL && s->vt.factory_user == unset->factory_user) {
        /* The placeholder only ever refused (no socket, no thread): replace it. */
        s->vt.destroy(s->inst);
        s->inst = NULL;
    }
    if (s != NULL && s->inst != NULL) {
        return aimsi_err(NULL, AIMS_E_STATE, "tls: already in use; set the TLS config before "
                         "the first tls:// listen or call");
    }
    if (vt == unset) {
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED, "libaims was built without TLS "
                         "(meson -Dtls=disabled)");
    }
    AIMSI_TRY(aimsi_ttable_add(tt, vt));
    aimsi_tls_config_ref(cfg);
    aims_tls_config_destroy(tt->tls);
    tt->tls = cfg;
    return AIMS_OK;
}

int aimsi_ttable_streams(const aimsi_tslot *slot)
{
    return slot != NULL && slot->vt.send == aimsi_stream_send;
}

const char *aimsi_ttable_peer(const aimsi_tslot *slot, void *conn)
{
    if (slot == NULL || slot->inst == NULL || slot->vt.send != aimsi_stream_send) {
        return NULL; /* not one of the stream families */
    }
    return aimsi_stream_peer(slot->inst, conn);
}
