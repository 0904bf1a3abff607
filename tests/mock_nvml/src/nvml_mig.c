/*
 * The MIG entry points of the mock: MIG mode and MIG device handles, and the
 * GPU/compute instance queries (profiles, instances, placements) that tools
 * such as go-nvlib use to name a MIG device's profile. Shares the lock and
 * handle scheme of nvml.c through nvml_internal.h.
 *
 * GPU instance handles encode (GPU, layout bank, GI id) and compute instance
 * handles (GPU, layout bank, GI id, CI id): after a `mig` re-layout the old
 * ones are NVML_ERROR_INVALID_ARGUMENT, as for a destroyed instance.
 */
#include "nvml_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* MIG devices                                                               */

EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *currentMode, unsigned int *pendingMode)
{
    ENTER();
    mock_gpu *gpu;
    mock_mig *mig;
    nvmlReturn_t rc = device_begin(device, &gpu, &mig, currentMode && pendingMode);
    if (rc == NVML_SUCCESS && (mig || !gpu->mig_capable))
        rc = NVML_ERROR_NOT_SUPPORTED;
    if (rc == NVML_SUCCESS) {
        *currentMode = gpu->mig_current;
        *pendingMode = gpu->mig_pending;
    }
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count)
{
    ENTER();
    mock_gpu *gpu;
    mock_mig *mig;
    nvmlReturn_t rc = device_begin(device, &gpu, &mig, count != NULL);
    if (rc == NVML_SUCCESS && mig)
        rc = NVML_ERROR_NOT_SUPPORTED;
    if (rc == NVML_SUCCESS)
        *count = gpu->mig_capable ? gpu->mig_max_devices : 0; /* zero if MIG is unsupported or disabled */
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index,
                                                        nvmlDevice_t *migDevice)
{
    ENTER();
    mock_gpu *gpu;
    mock_mig *mig;
    nvmlReturn_t rc = device_begin(device, &gpu, &mig, migDevice != NULL);
    if (rc == NVML_SUCCESS && mig)
        rc = NVML_ERROR_INVALID_ARGUMENT; /* needs the parent GPU's handle */
    if (rc == NVML_SUCCESS && !gpu->mig_capable)
        rc = NVML_ERROR_NOT_SUPPORTED;
    if (rc == NVML_SUCCESS && index >= gpu->mig_max_devices)
        rc = NVML_ERROR_INVALID_ARGUMENT;
    if (rc == NVML_SUCCESS) {
        rc = NVML_ERROR_NOT_FOUND;
        for (unsigned m = 0; m < gpu->mig_count; m++) {
            if (gpu->mig[m].index == index) {
                *migDevice = mig_handle(gpu, &gpu->mig[m]);
                rc = NVML_SUCCESS;
            }
        }
    }
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned int *isMigDevice)
{
    ENTER();
    mock_gpu *gpu;
    mock_mig *mig;
    nvmlReturn_t rc = device_begin(device, &gpu, &mig, isMigDevice != NULL);
    if (rc == NVML_SUCCESS)
        *isMigDevice = mig != NULL;
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned int *id)
{
    ENTER();
    mock_gpu *gpu;
    mock_mig *mig;
    nvmlReturn_t rc = device_begin(device, &gpu, &mig, id != NULL);
    if (rc == NVML_SUCCESS && !mig)
        rc = NVML_ERROR_NOT_SUPPORTED;
    if (rc == NVML_SUCCESS)
        *id = mig->gpu_instance_id;
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, unsigned int *id)
{
    ENTER();
    mock_gpu *gpu;
    mock_mig *mig;
    nvmlReturn_t rc = device_begin(device, &gpu, &mig, id != NULL);
    if (rc == NVML_SUCCESS && !mig)
        rc = NVML_ERROR_NOT_SUPPORTED;
    if (rc == NVML_SUCCESS)
        *id = mig->compute_instance_id;
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t migDevice, nvmlDevice_t *device)
{
    ENTER();
    mock_gpu *gpu;
    mock_mig *mig;
    nvmlReturn_t rc = device_begin(migDevice, &gpu, &mig, device != NULL);
    if (rc == NVML_SUCCESS && !mig)
        rc = NVML_ERROR_INVALID_ARGUMENT;
    if (rc == NVML_SUCCESS)
        *device = gpu_handle(gpu);
    LEAVE(rc);
}

static nvmlReturn_t attributes(nvmlDevice_t device, nvmlDeviceAttributes_t *out)
{
    mock_gpu *gpu;
    mock_mig *mig;
    nvmlReturn_t rc = device_begin(device, &gpu, &mig, out != NULL);
    if (rc == NVML_SUCCESS && !mig)
        rc = NVML_ERROR_NOT_SUPPORTED; /* "currently only supports MIG device handles" */
    if (rc == NVML_SUCCESS)
        *out = mig->attributes;
    return rc;
}

EXPORT nvmlReturn_t nvmlDeviceGetAttributes_v2(nvmlDevice_t device, nvmlDeviceAttributes_t *attrs)
{
    ENTER();
    LEAVE(attributes(device, attrs));
}

EXPORT nvmlReturn_t nvmlDeviceGetAttributes(nvmlDevice_t device, nvmlDeviceAttributes_t *attrs)
{
    ENTER();
    LEAVE(attributes(device, attrs));
}

/* ------------------------------------------------------------------------ */
/* GPU and compute instances                                                 */

static unsigned char g_gi_arena[MOCK_MAX_GPUS * MOCK_BANKS * MOCK_MAX_GI_ID];
static unsigned char g_ci_arena[MOCK_MAX_GPUS * MOCK_BANKS * MOCK_MAX_GI_ID * MOCK_MAX_CI_ID];

/* The MIG device of (gi, ci), or with ci < 0 the first one of GPU instance gi; NULL if none. */
static const mock_mig *find_instance(const mock_gpu *gpu, unsigned gi, int ci)
{
    for (unsigned m = 0; m < gpu->mig_count; m++)
        if (gpu->mig[m].gpu_instance_id == gi && (ci < 0 || gpu->mig[m].compute_instance_id == (unsigned)ci))
            return &gpu->mig[m];
    return NULL;
}

static size_t instance_slot(const mock_gpu *gpu, unsigned gi)
{
    return ((size_t)gpu->index * MOCK_BANKS + gpu->layout_generation % MOCK_BANKS) * MOCK_MAX_GI_ID + gi;
}

static nvmlGpuInstance_t gi_handle(const mock_gpu *gpu, unsigned gi)
{
    return (nvmlGpuInstance_t)(void *)&g_gi_arena[instance_slot(gpu, gi)];
}

static nvmlComputeInstance_t ci_handle(const mock_gpu *gpu, unsigned gi, unsigned ci)
{
    return (nvmlComputeInstance_t)(void *)&g_ci_arena[instance_slot(gpu, gi) * MOCK_MAX_CI_ID + ci];
}

/* Decode an arena offset into (GPU, GI id[, CI id]) of the current layout; NULL if stale or bogus. */
static const mock_mig *resolve_instance(uintptr_t p, uintptr_t base, size_t size, size_t per_gi, mock_gpu **gpu)
{
    if (p < base || p >= base + size)
        return NULL;
    size_t i = p - base;
    size_t ci = i % per_gi, gi = i / per_gi % MOCK_MAX_GI_ID, bank = i / per_gi / MOCK_MAX_GI_ID % MOCK_BANKS;
    size_t g = i / per_gi / MOCK_MAX_GI_ID / MOCK_BANKS;
    if (g >= g_node->gpu_count || bank != g_node->gpus[g].layout_generation % MOCK_BANKS)
        return NULL;
    *gpu = &g_node->gpus[g];
    return find_instance(*gpu, (unsigned)gi, per_gi > 1 ? (int)ci : -1);
}

/* Prologue of GPU instance queries: initialised, a live instance, valid arguments, GPU not lost/faulted. */
static nvmlReturn_t gi_begin(nvmlGpuInstance_t handle, mock_gpu **gpu, const mock_mig **gi, int args_ok)
{
    if (g_refcount == 0)
        return NVML_ERROR_UNINITIALIZED;
    refresh();
    *gi = resolve_instance((uintptr_t)(void *)handle, (uintptr_t)g_gi_arena, sizeof g_gi_arena, 1, gpu);
    if (!*gi || !(*gpu)->catalogue || !args_ok)
        return NVML_ERROR_INVALID_ARGUMENT;
    return check_gpu(*gpu);
}

static nvmlReturn_t ci_begin(nvmlComputeInstance_t handle, mock_gpu **gpu, const mock_mig **ci, int args_ok)
{
    if (g_refcount == 0)
        return NVML_ERROR_UNINITIALIZED;
    refresh();
    *ci = resolve_instance((uintptr_t)(void *)handle, (uintptr_t)g_ci_arena, sizeof g_ci_arena, MOCK_MAX_CI_ID, gpu);
    if (!*ci || !(*gpu)->catalogue || !args_ok)
        return NVML_ERROR_INVALID_ARGUMENT;
    return check_gpu(*gpu);
}

/* Prologue of instance queries on a parent GPU: it must have MIG enabled and a catalogue. */
static nvmlReturn_t parent_begin(nvmlDevice_t device, mock_gpu **gpu, int args_ok, int need_enabled)
{
    mock_mig *mig;
    nvmlReturn_t rc = device_begin(device, gpu, &mig, args_ok);
    if (rc == NVML_SUCCESS && mig)
        return NVML_ERROR_INVALID_ARGUMENT; /* needs the parent GPU's handle */
    if (rc == NVML_SUCCESS && (!(*gpu)->mig_capable || !(*gpu)->catalogue || (need_enabled && !(*gpu)->mig_current)))
        return NVML_ERROR_NOT_SUPPORTED;
    return rc;
}

static const mock_gi_profile *gi_profile_by_id(const mock_gpu *gpu, unsigned id)
{
    for (unsigned p = 0; p < NVML_GPU_INSTANCE_PROFILE_COUNT; p++)
        if (gpu->catalogue->gi[p].present && gpu->catalogue->gi[p].id == id)
            return &gpu->catalogue->gi[p];
    return NULL;
}

/* The fields every version of nvmlGpuInstanceProfileInfo shares, from `id` to `memorySizeMB`. */
#define FILL_GI_PROFILE(info, p)                     \
    do {                                             \
        (info)->id = (p)->id;                        \
        (info)->sliceCount = (p)->slices;            \
        (info)->instanceCount = (p)->instances;      \
        (info)->multiprocessorCount = (p)->multiprocessors; \
        (info)->copyEngineCount = (p)->copy_engines; \
        (info)->decoderCount = (p)->decoders;        \
        (info)->encoderCount = (p)->encoders;        \
        (info)->jpegCount = (p)->jpegs;              \
        (info)->ofaCount = (p)->ofas;                \
        (info)->memorySizeMB = (p)->memory_mb;       \
    } while (0)

/* A versioned (v2 or v3) GPU instance profile info; the version field must be set by the caller. */
static nvmlReturn_t fill_gi_profile_v(const mock_gi_profile *p, void *out)
{
    unsigned version = *(unsigned *)out;
    if (version == nvmlGpuInstanceProfileInfo_v2) {
        nvmlGpuInstanceProfileInfo_v2_t *info = out;
        FILL_GI_PROFILE(info, p);
        info->isP2pSupported = 0;
        snprintf(info->name, sizeof info->name, "MIG %s", p->name);
        return NVML_SUCCESS;
    }
    if (version == nvmlGpuInstanceProfileInfo_v3) {
        nvmlGpuInstanceProfileInfo_v3_t *info = out;
        FILL_GI_PROFILE(info, p);
        info->capabilities = 0; /* no P2P, no graphics */
        snprintf(info->name, sizeof info->name, "MIG %s", p->name);
        return NVML_SUCCESS;
    }
    return NVML_ERROR_INVALID_ARGUMENT; /* as the header documents for a bad info->version */
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfo(nvmlDevice_t device, unsigned int profile,
                                                         nvmlGpuInstanceProfileInfo_t *info)
{
    ENTER();
    mock_gpu *gpu;
    nvmlReturn_t rc = parent_begin(device, &gpu, info && profile < NVML_GPU_INSTANCE_PROFILE_COUNT, 1);
    if (rc == NVML_SUCCESS && !gpu->catalogue->gi[profile].present)
        rc = NVML_ERROR_NOT_SUPPORTED;
    if (rc == NVML_SUCCESS) {
        FILL_GI_PROFILE(info, &gpu->catalogue->gi[profile]);
        info->isP2pSupported = 0;
    }
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfoV(nvmlDevice_t device, unsigned int profile,
                                                          nvmlGpuInstanceProfileInfo_v2_t *info)
{
    ENTER();
    mock_gpu *gpu;
    nvmlReturn_t rc = parent_begin(device, &gpu, info && profile < NVML_GPU_INSTANCE_PROFILE_COUNT, 1);
    if (rc == NVML_SUCCESS && !gpu->catalogue->gi[profile].present)
        rc = NVML_ERROR_NOT_SUPPORTED;
    if (rc == NVML_SUCCESS)
        rc = fill_gi_profile_v(&gpu->catalogue->gi[profile], info);
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfoByIdV(nvmlDevice_t device, unsigned int profileId,
                                                              nvmlGpuInstanceProfileInfo_v2_t *info)
{
    ENTER();
    mock_gpu *gpu;
    nvmlReturn_t rc = parent_begin(device, &gpu, info != NULL, 1);
    const mock_gi_profile *p = rc == NVML_SUCCESS ? gi_profile_by_id(gpu, profileId) : NULL;
    if (rc == NVML_SUCCESS && !p)
        rc = NVML_ERROR_INVALID_ARGUMENT;
    if (rc == NVML_SUCCESS)
        rc = fill_gi_profile_v(p, info);
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstancePossiblePlacements_v2(nvmlDevice_t device, unsigned int profileId,
                                                                   nvmlGpuInstancePlacement_t *placements,
                                                                   unsigned int *count)
{
    ENTER();
    mock_gpu *gpu;
    nvmlReturn_t rc = parent_begin(device, &gpu, count != NULL, 0); /* answered whatever the MIG mode */
    const mock_gi_profile *p = rc == NVML_SUCCESS ? gi_profile_by_id(gpu, profileId) : NULL;
    if (rc == NVML_SUCCESS && !p)
        rc = NVML_ERROR_INVALID_ARGUMENT;
    if (rc == NVML_SUCCESS) {
        for (unsigned i = 0; placements && i < p->placement_count; i++)
            placements[i] = (nvmlGpuInstancePlacement_t){.start = p->placements[i], .size = p->memory_slices};
        *count = p->placement_count;
    }
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstances(nvmlDevice_t device, unsigned int profileId,
                                              nvmlGpuInstance_t *gpuInstances, unsigned int *count)
{
    ENTER();
    mock_gpu *gpu;
    nvmlReturn_t rc = parent_begin(device, &gpu, gpuInstances && count, 1);
    const mock_gi_profile *p = rc == NVML_SUCCESS ? gi_profile_by_id(gpu, profileId) : NULL;
    if (rc == NVML_SUCCESS && !p)
        rc = NVML_ERROR_INVALID_ARGUMENT;
    if (rc == NVML_SUCCESS) {
        unsigned n = 0;
        for (unsigned gi = 0; gi < MOCK_MAX_GI_ID; gi++) { /* in GI id order */
            const mock_mig *m = find_instance(gpu, gi, -1);
            if (m && &gpu->catalogue->gi[m->gi_profile] == p)
                gpuInstances[n++] = gi_handle(gpu, gi);
        }
        *count = n;
    }
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceById(nvmlDevice_t device, unsigned int id, nvmlGpuInstance_t *gpuInstance)
{
    ENTER();
    mock_gpu *gpu;
    nvmlReturn_t rc = parent_begin(device, &gpu, gpuInstance != NULL, 1);
    if (rc == NVML_SUCCESS && (id >= MOCK_MAX_GI_ID || !find_instance(gpu, id, -1)))
        rc = NVML_ERROR_NOT_FOUND;
    if (rc == NVML_SUCCESS)
        *gpuInstance = gi_handle(gpu, id);
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlGpuInstanceGetInfo(nvmlGpuInstance_t gpuInstance, nvmlGpuInstanceInfo_t *info)
{
    ENTER();
    mock_gpu *gpu;
    const mock_mig *gi;
    nvmlReturn_t rc = gi_begin(gpuInstance, &gpu, &gi, info != NULL);
    if (rc == NVML_SUCCESS) {
        info->device = gpu_handle(gpu);
        info->id = gi->gpu_instance_id;
        info->profileId = gpu->catalogue->gi[gi->gi_profile].id;
        info->placement = (nvmlGpuInstancePlacement_t){.start = gi->gi_start, .size = gi->gi_size};
    }
    LEAVE(rc);
}

/* The fields every version of nvmlComputeInstanceProfileInfo shares, from `id` to `sharedOfaCount`. */
#define FILL_CI_PROFILE(info, g, c)                        \
    do {                                                   \
        (info)->id = (c)->id;                              \
        (info)->sliceCount = (c)->slices;                  \
        (info)->instanceCount = (c)->instances;            \
        (info)->multiprocessorCount = (c)->multiprocessors; \
        (info)->sharedCopyEngineCount = (g)->copy_engines; \
        (info)->sharedDecoderCount = (g)->decoders;        \
        (info)->sharedEncoderCount = (g)->encoders;        \
        (info)->sharedJpegCount = (g)->jpegs;              \
        (info)->sharedOfaCount = (g)->ofas;                \
    } while (0)

static void ci_profile_name(const mock_gi_profile *g, const mock_ci_profile *c, char *out, size_t len)
{
    if (c->slices == g->slices)
        snprintf(out, len, "MIG %s", g->name);
    else
        snprintf(out, len, "MIG %uc.%s", c->slices, g->name);
}

static nvmlReturn_t ci_profile_begin(nvmlGpuInstance_t gpuInstance, unsigned profile, unsigned engProfile,
                                     int args_ok, const mock_gi_profile **g, const mock_ci_profile **c)
{
    mock_gpu *gpu;
    const mock_mig *gi;
    nvmlReturn_t rc = gi_begin(gpuInstance, &gpu, &gi,
                               args_ok && profile < NVML_COMPUTE_INSTANCE_PROFILE_COUNT &&
                                   engProfile < NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_COUNT);
    if (rc != NVML_SUCCESS)
        return rc;
    *g = &gpu->catalogue->gi[gi->gi_profile];
    *c = &(*g)->ci[profile];
    return (*c)->present ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
}

EXPORT nvmlReturn_t nvmlGpuInstanceGetComputeInstanceProfileInfo(nvmlGpuInstance_t gpuInstance, unsigned int profile,
                                                                  unsigned int engProfile,
                                                                  nvmlComputeInstanceProfileInfo_t *info)
{
    ENTER();
    const mock_gi_profile *g;
    const mock_ci_profile *c;
    nvmlReturn_t rc = ci_profile_begin(gpuInstance, profile, engProfile, info != NULL, &g, &c);
    if (rc == NVML_SUCCESS)
        FILL_CI_PROFILE(info, g, c);
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlGpuInstanceGetComputeInstanceProfileInfoV(nvmlGpuInstance_t gpuInstance, unsigned int profile,
                                                                   unsigned int engProfile,
                                                                   nvmlComputeInstanceProfileInfo_v2_t *info)
{
    ENTER();
    const mock_gi_profile *g;
    const mock_ci_profile *c;
    nvmlReturn_t rc = ci_profile_begin(gpuInstance, profile, engProfile, info != NULL, &g, &c);
    if (rc == NVML_SUCCESS && info->version == nvmlComputeInstanceProfileInfo_v2) {
        FILL_CI_PROFILE(info, g, c);
        ci_profile_name(g, c, info->name, sizeof info->name);
    } else if (rc == NVML_SUCCESS && info->version == nvmlComputeInstanceProfileInfo_v3) {
        nvmlComputeInstanceProfileInfo_v3_t *v3 = (nvmlComputeInstanceProfileInfo_v3_t *)(void *)info;
        FILL_CI_PROFILE(v3, g, c);
        ci_profile_name(g, c, v3->name, sizeof v3->name);
        v3->capabilities = 0;
    } else if (rc == NVML_SUCCESS) {
        rc = NVML_ERROR_INVALID_ARGUMENT; /* as the header documents for a bad info->version */
    }
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlGpuInstanceGetComputeInstances(nvmlGpuInstance_t gpuInstance, unsigned int profileId,
                                                        nvmlComputeInstance_t *computeInstances, unsigned int *count)
{
    ENTER();
    mock_gpu *gpu;
    const mock_mig *gi;
    nvmlReturn_t rc = gi_begin(gpuInstance, &gpu, &gi, computeInstances && count);
    const mock_gi_profile *g = rc == NVML_SUCCESS ? &gpu->catalogue->gi[gi->gi_profile] : NULL;
    const mock_ci_profile *c = NULL;
    for (unsigned k = 0; g && k < NVML_COMPUTE_INSTANCE_PROFILE_COUNT; k++)
        if (g->ci[k].present && g->ci[k].id == profileId)
            c = &g->ci[k];
    if (rc == NVML_SUCCESS && !c)
        rc = NVML_ERROR_NOT_SUPPORTED;
    if (rc == NVML_SUCCESS) {
        unsigned n = 0;
        for (unsigned ci = 0; ci < MOCK_MAX_CI_ID; ci++) { /* in CI id order */
            const mock_mig *m = find_instance(gpu, gi->gpu_instance_id, (int)ci);
            if (m && &g->ci[m->ci_profile] == c)
                computeInstances[n++] = ci_handle(gpu, gi->gpu_instance_id, ci);
        }
        *count = n;
    }
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlGpuInstanceGetComputeInstanceById(nvmlGpuInstance_t gpuInstance, unsigned int id,
                                                          nvmlComputeInstance_t *computeInstance)
{
    ENTER();
    mock_gpu *gpu;
    const mock_mig *gi;
    nvmlReturn_t rc = gi_begin(gpuInstance, &gpu, &gi, computeInstance != NULL);
    if (rc == NVML_SUCCESS && (id >= MOCK_MAX_CI_ID || !find_instance(gpu, gi->gpu_instance_id, (int)id)))
        rc = NVML_ERROR_NOT_FOUND;
    if (rc == NVML_SUCCESS)
        *computeInstance = ci_handle(gpu, gi->gpu_instance_id, id);
    LEAVE(rc);
}

static nvmlReturn_t ci_info(nvmlComputeInstance_t computeInstance, nvmlComputeInstanceInfo_t *info)
{
    mock_gpu *gpu;
    const mock_mig *ci;
    nvmlReturn_t rc = ci_begin(computeInstance, &gpu, &ci, info != NULL);
    if (rc == NVML_SUCCESS) {
        const mock_ci_profile *c = &gpu->catalogue->gi[ci->gi_profile].ci[ci->ci_profile];
        info->device = gpu_handle(gpu);
        info->gpuInstance = gi_handle(gpu, ci->gpu_instance_id);
        info->id = ci->compute_instance_id;
        info->profileId = c->id;
        info->placement = (nvmlComputeInstancePlacement_t){.start = ci->ci_start, .size = c->slices};
    }
    return rc;
}

EXPORT nvmlReturn_t nvmlComputeInstanceGetInfo_v2(nvmlComputeInstance_t computeInstance,
                                                  nvmlComputeInstanceInfo_t *info)
{
    ENTER();
    LEAVE(ci_info(computeInstance, info));
}

EXPORT nvmlReturn_t nvmlComputeInstanceGetInfo(nvmlComputeInstance_t computeInstance, nvmlComputeInstanceInfo_t *info)
{
    ENTER();
    LEAVE(ci_info(computeInstance, info));
}
