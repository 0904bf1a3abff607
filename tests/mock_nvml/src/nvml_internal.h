/*
 * What the exported entry points share: the one lock, the loaded node and
 * control file, handle encoding and the common prologue of device queries.
 * Used by nvml.c (most of NVML) and nvml_mig.c (MIG and GPU/compute
 * instances); nothing here is exported from the library.
 */
#ifndef MOCK_NVML_INTERNAL_H
#define MOCK_NVML_INTERNAL_H

#include "control.h"
#include "node.h"

#include <pthread.h>

#define EXPORT __attribute__((visibility("default")))

/*
 * A handle is an address in an arena; its offset says what it names. MIG
 * device and instance handles also carry the layout generation of their GPU
 * (modulo MOCK_BANKS), so a handle from before a `mig` re-layout is invalid
 * afterwards (unless exactly a multiple of MOCK_BANKS re-layouts happened).
 */
#define MOCK_BANKS 8

extern pthread_mutex_t g_lock;
extern unsigned g_refcount;
extern mock_node *g_node;
extern mock_control g_ctl;
extern const char *g_call; /* the exported function being served, for `fail fn=` faults */

/* MOCK_NVML_CALL_LOG: "<pid> <function>" per call, one O_APPEND write each. */
void trace(const char *function);

#define ENTER()                          \
    do {                                 \
        trace(__func__);                 \
        pthread_mutex_lock(&g_lock);     \
        g_call = __func__;               \
    } while (0)

#define LEAVE(rc)                        \
    do {                                 \
        nvmlReturn_t rc_ = (rc);         \
        pthread_mutex_unlock(&g_lock);   \
        return rc_;                      \
    } while (0)

/* Apply control commands appended since the last call (cheap when there are none). */
void refresh(void);

/* The GPU (and MIG device, or NULL) a device handle names in the current layout; 0 if none. */
int resolve(nvmlDevice_t handle, mock_gpu **gpu, mock_mig **mig);
nvmlDevice_t gpu_handle(const mock_gpu *gpu);
nvmlDevice_t mig_handle(const mock_gpu *gpu, const mock_mig *mig);

/* A call that concerns `gpu` (or one of its MIG devices): lost, or failed by a `fail fn=` fault. */
nvmlReturn_t check_gpu(const mock_gpu *gpu);

/*
 * The common prologue of device queries, in NVML's order: initialised, valid
 * handle, valid output arguments, then the GPU (or a MIG device's parent) not
 * lost and not failed by an injected fault.
 */
nvmlReturn_t device_begin(nvmlDevice_t device, mock_gpu **gpu, mock_mig **mig, int args_ok);

nvmlReturn_t copy_string(char *dst, unsigned int length, const char *src);

#endif
