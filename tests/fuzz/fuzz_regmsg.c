/*
 * fuzz_regmsg.c -- fuzz target for registry messages (src/svc/svc_registry.c).
 *
 * The input is one wire frame. Decoded, its tensors become a request to the
 * "aims.registry" service kind (the method named in the frame; every method
 * is tried when the name is unknown) over a registry holding two instances,
 * and the same tensors are applied as a "changes" reply to a client mirror.
 * Both sides must answer hostile tensors with a status, never a crash, and
 * leave no libaims block live.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "codec/aimsi_frame.h"
#include "core/aimsi_core.h"
#include "svc/aimsi_msg.h"
#include "svc/aimsi_svckind.h"
#include "svc/aimsi_regsync.h"

#define FUZZ_RAW_CAP ((size_t)1 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void run_method(void *impl, const char *method, const aims_msg *req)
{
    aims_msg reply;
    aimsi_msg_init(&reply);
    aimsi_work w = {method, req, &reply, 0, AIMS_OK, NULL, NULL};
    aimsi_work *items[1] = {&w};
    aimsi_regsvc_kind()->run(impl, items, 1);
    aimsi_msg_fini(&reply);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    aimsi_frame *f = aimsi_calloc(1, sizeof(*f));
    void *bytes = aimsi_malloc(size ? size : 1);
    if (f == NULL || bytes == NULL) {
        aimsi_free(f);
        aimsi_free(bytes);
        return 0;
    }
    memcpy(bytes, data, size);
    if (aimsi_frame_decode(bytes, size, FUZZ_RAW_CAP, f) != AIMS_OK) {
        aimsi_free(f);
        aimsi_free(bytes);
        if (aims_alloc_live() != 0) {
            __builtin_trap();
        }
        return 0;
    }
    char method[AIMSI_FRAME_MAX_METHOD + 1];
    memcpy(method, f->hdr.method, sizeof(method));
    aims_msg req;
    aimsi_msg_init(&req);
    if (aimsi_msg_adopt_frame(&req, bytes, f) == AIMS_OK) {
        aims_registry *reg = NULL;
        void *impl = NULL;
        if (aims_registry_create(&reg) == AIMS_OK) {
            aims_instance a, b;
            aims_registry_register(reg, "infer", "tcp://127.0.0.1:1", 1, 60000, &a);
            aims_registry_register(reg, "infer@2", "ipc:///tmp/x", 5, 60000, &b);
            if (aimsi_regsvc_create(reg, &impl) == AIMS_OK) {
                static const char *const methods[] = {"changes", "heartbeat", "register",
                                                      "deregister"};
                int known = 0;
                for (size_t i = 0; i < 4; i++) {
                    known |= strcmp(method, methods[i]) == 0;
                }
                if (known) {
                    run_method(impl, method, &req);
                } else {
                    for (size_t i = 0; i < 4; i++) {
                        run_method(impl, methods[i], &req);
                    }
                }
                aimsi_regsvc_kind()->destroy(impl);
            }
            aims_registry *mirror = NULL;
            if (aims_registry_create(&mirror) == AIMS_OK) {
                (void)aimsi_regsync_apply_once(mirror, &req);
                aims_registry_destroy(mirror);
            }
            aims_registry_destroy(reg);
        }
    }
    aimsi_msg_fini(&req);
    if (aims_alloc_live() != 0) {
        __builtin_trap();
    }
    return 0;
}
