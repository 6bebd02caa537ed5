/*
 * registry_pub.c -- exactly-once publication of model versions in the
 * in-process registry (aims_publish.h, docs/PUBLISH.md).
 *
 * Why here: the in-process registry is the reference backend. The registry
 * service ("publish" method, svc_registry.c) runs this very code on the
 * hosted registry, and the etcd backend implements the same contract with a
 * transaction, so the three answer alike: the first writer of "name@version"
 * wins, every later one gets AIMS_E_EXISTS naming the winner.
 *
 * How: a small table of records (key "name@version", owner, meta) under its
 * own mutex, embedded in aims_registry (registry.c only initialises it). The
 * check and the insert happen under that one lock, which is all exactly-once
 * needs in one process. Records are never removed: a publication is history,
 * and the table is small (one record per published version). A linear scan is
 * fine at that size (hundreds of versions); keys are compared whole.
 *
 * The argument checks (aimsi_pub_check) live here, the lowest layer that
 * publishes, so every backend refuses the same names with the same message.
 */
#include <stdio.h>
#include <string.h>

#include "aimsi_orch.h"
#include "aims/aims_publish.h"

#define NAME_MAX_BYTES 95u

struct aimsi_pubrec {
    char *key; /* "name@version" */
    char *owner;
    char *meta;
};

int aimsi_pubtab_init(aimsi_pubtab *t)
{
    memset(t, 0, sizeof(*t));
    return pthread_mutex_init(&t->mu, NULL) != 0 ? -1 : 0;
}

void aimsi_pubtab_fini(aimsi_pubtab *t)
{
    for (size_t i = 0; i < t->n; i++) {
        aimsi_free(t->recs[i].key);
        aimsi_free(t->recs[i].owner);
        aimsi_free(t->recs[i].meta);
    }
    aimsi_free(t->recs);
    pthread_mutex_destroy(&t->mu);
}

static int name_byte(char c, int slash)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '-' || (slash && c == '/');
}

static aims_status check_token(const char *who, const char *what, const char *s, size_t max,
                               int slash)
{
    const size_t n = strnlen(s, max + 1u);
    if (n == 0 || n > max) {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: %s must be 1..%zu bytes", who, what, max);
    }
    for (size_t i = 0; i < n; i++) {
        if (!name_byte(s[i], slash)) {
            return aimsi_err(NULL, AIMS_E_INVAL, "%s: %s byte %zu (0x%02x) is not in "
                             "[A-Za-z0-9_.%s-]", who, what, i, (unsigned)(unsigned char)s[i],
                             slash ? "/" : "");
        }
    }
    return AIMS_OK;
}

aims_status aimsi_pub_check(const char *who, const char *name, const char *version,
                            const char *owner, const char *meta)
{
    if (name == NULL || version == NULL || owner == NULL) {
        return aimsi_err(NULL, AIMS_E_MISUSE, "%s: name, version and owner must not be NULL",
                         who);
    }
    AIMSI_TRY(check_token(who, "model name", name, NAME_MAX_BYTES, 1));
    AIMSI_TRY(check_token(who, "version", version, AIMS_PUBLISH_MAX_VERSION, 0));
    const size_t on = strnlen(owner, AIMS_PUBLISH_MAX_OWNER + 1u);
    if (on == 0 || on > AIMS_PUBLISH_MAX_OWNER || memchr(owner, '\n', on) != NULL) {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: owner must be 1..%d bytes without newline",
                         who, AIMS_PUBLISH_MAX_OWNER);
    }
    if (meta != NULL && strnlen(meta, AIMS_PUBLISH_MAX_META + 1u) > AIMS_PUBLISH_MAX_META) {
        return aimsi_err(NULL, AIMS_E_INVAL, "%s: meta must be at most %d bytes", who,
                         AIMS_PUBLISH_MAX_META);
    }
    return AIMS_OK;
}

aims_status aimsi_pub_conflict(const char *name, const char *version, const char *owner)
{
    return aimsi_err(NULL, AIMS_E_EXISTS, "%s@%s already published by %s", name, version,
                     owner);
}

static aimsi_pubrec *find(aimsi_pubtab *t, const char *key)
{
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->recs[i].key, key) == 0) {
            return &t->recs[i];
        }
    }
    return NULL;
}

static void make_key(char *key, const char *name, const char *version)
{
    snprintf(key, NAME_MAX_BYTES + AIMS_PUBLISH_MAX_VERSION + 2u, "%s@%s", name, version);
}

aims_status aims_registry_publish(aims_registry *r, const char *name, const char *version,
                                  const char *owner, const char *meta)
{
    aimsi_pubtab *t = aimsi_registry_pubs(r);
    if (t == NULL) {
        return AIMSI_MISUSE("registry handle");
    }
    AIMSI_TRY(aimsi_pub_check("aims_registry_publish", name, version, owner, meta));
    char key[NAME_MAX_BYTES + AIMS_PUBLISH_MAX_VERSION + 2u];
    make_key(key, name, version);
    aimsi_pubrec rec = {aimsi_strdup(key), aimsi_strdup(owner),
                        aimsi_strdup(meta != NULL ? meta : "")};
    char winner[AIMS_PUBLISH_MAX_OWNER + 1] = "";
    aims_status rc = AIMS_OK;
    if (rec.key == NULL || rec.owner == NULL || rec.meta == NULL) {
        rc = AIMS_E_NOMEM;
    } else {
        pthread_mutex_lock(&t->mu);
        const aimsi_pubrec *old = find(t, key);
        if (old != NULL) {
            snprintf(winner, sizeof(winner), "%s", old->owner);
            rc = AIMS_E_EXISTS;
        } else if (t->n == t->cap) {
            const size_t cap = t->cap ? t->cap * 2 : 16;
            aimsi_pubrec *g = aimsi_realloc(t->recs, cap * sizeof(*g));
            if (g == NULL) {
                rc = AIMS_E_NOMEM;
            } else {
                t->recs = g;
                t->cap = cap;
            }
        }
        if (rc == AIMS_OK) {
            t->recs[t->n++] = rec;
        }
        pthread_mutex_unlock(&t->mu);
    }
    if (rc == AIMS_OK) {
        return AIMS_OK;
    }
    aimsi_free(rec.key);
    aimsi_free(rec.owner);
    aimsi_free(rec.meta);
    /* raised after the unlock: aimsi_err may call the host's log callback */
    return rc == AIMS_E_EXISTS
               ? aimsi_pub_conflict(name, version, winner)
               : aimsi_err(NULL, AIMS_E_NOMEM, "aims_registry_publish: out of memory");
}

aims_status aims_registry_get_publication(aims_registry *r, const char *name,
                                          const char *version, char *owner, size_t owner_cap,
                                          char *meta, size_t meta_cap)
{
    aimsi_pubtab *t = aimsi_registry_pubs(r);
    if (t == NULL) {
        return AIMSI_MISUSE("registry handle");
    }
    AIMSI_TRY(aimsi_pub_check("aims_registry_get_publication", name, version, "-", NULL));
    char key[NAME_MAX_BYTES + AIMS_PUBLISH_MAX_VERSION + 2u];
    make_key(key, name, version);
    aims_status rc = AIMS_E_NOTFOUND;
    pthread_mutex_lock(&t->mu);
    const aimsi_pubrec *p = find(t, key);
    if (p != NULL) {
        const int fits = (owner == NULL || strlen(p->owner) < owner_cap) &&
                         (meta == NULL || strlen(p->meta) < meta_cap);
        if (fits) {
            if (owner != NULL) {
                strcpy(owner, p->owner);
            }
            if (meta != NULL) {
                strcpy(meta, p->meta);
            }
        }
        rc = fits ? AIMS_OK : AIMS_E_RANGE;
    }
    pthread_mutex_unlock(&t->mu);
    if (rc == AIMS_E_NOTFOUND) {
        return aimsi_err(NULL, rc, "%s@%s is not published", name, version);
    }
    return rc == AIMS_E_RANGE ? aimsi_err(NULL, rc, "aims_registry_get_publication: buffer "
                                          "too small for the owner or meta")
                              : AIMS_OK;
}
