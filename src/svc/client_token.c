/*
 * client_token.c -- the bearer token a client attaches to its calls
 * (aims_client_set_token; include/aims/aims_ident.h, docs/IDENT.md).
 *
 * Why. A caller without a certificate proves who it is with a JWT that the
 * node's policy verifies (docs/POLICY.md section 4). Adding a "$auth" tensor
 * to every request by hand is easy to forget and puts a credential in every
 * message the program builds; the client does it once for all calls instead.
 *
 * How. The client holds one reference-counted copy of the token (under its
 * mutex). The sender (client_send.c) takes a reference in the hold of the
 * mutex that links its call, and encode_request appends the token as a
 * borrowed BYTES view named "$auth" to the frame it encodes and drops the
 * reference. A renewal (set_token again) swaps the pointer: frames
 * being encoded keep the old copy alive until they are done with it, so a
 * renewal never races an encode. In-process calls never carry it (the node
 * treats in-process callers as "host").
 */
#include <string.h>

#include "../core/aimsi_core.h"
#include "aimsi_client.h"
#include "authz/aimsi_authz.h"
#include "aims/aims_ident.h"

struct aimsi_client_tok {
    _Atomic int refs;
    size_t len;
    char text[];
};

void aimsi_client_token_drop(aimsi_client_tok *t)
{
    if (t != NULL && atomic_fetch_sub(&t->refs, 1) == 1) {
        aimsi_free(t);
    }
}

aimsi_client_tok *aimsi_client_bearer_take_locked(aims_client *c)
{
    aimsi_client_tok *t = c->token;
    if (t != NULL) {
        atomic_fetch_add(&t->refs, 1);
    }
    return t;
}

int aimsi_client_token_view(const aimsi_client_tok *t, aimsi_tensor *view)
{
    if (t == NULL) {
        return 0;
    }
    memset(view, 0, sizeof(*view));
    view->dtype = AIMS_DT_BYTES;
    view->ndim = 1;
    view->dims[0] = t->len;
    memcpy(view->name, AIMSI_AUTH_TENSOR, sizeof(AIMSI_AUTH_TENSOR));
    view->data = t->text;
    view->bytes = t->len;
    return 1;
}

AIMS_API aims_status aims_client_set_token(aims_client *c, const char *token)
{
    if (!aimsi_obj_ok(c, AIMSI_MAGIC_CLIENT)) {
        return AIMSI_MISUSE("client is NULL or not a client");
    }
    aimsi_client_tok *t = NULL;
    const size_t len = token != NULL ? strnlen(token, AIMSI_JWT_MAX + 1) : 0;
    if (len > AIMSI_JWT_MAX) {
        return aimsi_client_call_err(c, AIMS_E_INVAL,
                         "aims_client_set_token: token longer than %u bytes", AIMSI_JWT_MAX);
    }
    for (size_t i = 0; i < len; i++) {
        if (token[i] <= ' ' || token[i] > '~') {
            return aimsi_client_call_err(c, AIMS_E_INVAL,
                             "aims_client_set_token: byte %zu of the token is not printable "
                             "ASCII (want a compact JWT \"xxx.yyy.zzz\")", i);
        }
    }
    if (len > 0) {
        t = aimsi_malloc(sizeof(*t) + len + 1);
        if (t == NULL) {
            return aimsi_client_call_err(c, AIMS_E_NOMEM, "aims_client_set_token: out of memory");
        }
        atomic_init(&t->refs, 1);
        t->len = len;
        memcpy(t->text, token, len + 1);
    }
    pthread_mutex_lock(&c->mu);
    aimsi_client_tok *old = c->token;
    c->token = t;
    pthread_mutex_unlock(&c->mu);
    aimsi_client_token_drop(old);
    return AIMS_OK;
}
