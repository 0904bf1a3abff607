/*
 * The exported NVML entry points of the mock libnvidia-ml.so.1.
 *
 * Built with -fvisibility=hidden against the real nvml.h (with
 * NVML_NO_UNVERSIONED_FUNC_DEFS, so the legacy unversioned symbols get their
 * own prototypes too): every exported function is checked against NVIDIA's
 * prototype, and nothing else is exported, so pynvml raises
 * NVMLError_FunctionNotFound for every call the mock does not model.
 *
 * All state sits behind one mutex because ctypes releases the GIL around
 * foreign calls: a health-check thread blocked in nvmlEventSetWait and an
 * enumerating thread really do call in concurrently. The MIG entry points
 * live in nvml_mig.c and share this state through nvml_internal.h.
 */
#include "nvml_internal.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define POLL_INTERVAL_NS (5 * 1000 * 1000L)
#define SET_MAGIC 0x6e766d6cu

typedef struct {
    unsigned gpu;
    unsigned long long mask;
    long long offset; /* events older than the registration are not recorded */
} registration;

struct nvmlEventSet_st {
    unsigned magic;
    long long cursor; /* control-file offset: only newer events are delivered */
    registration *regs;
    size_t reg_count;
    struct nvmlEventSet_st *next;
};

pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
unsigned g_refcount;
mock_node *g_node;
mock_control g_ctl;
const char *g_call;
static unsigned long g_generation; /* bumped by every real shutdown */
static struct nvmlEventSet_st *g_sets;
/* GPU handles first, then MIG device handles by (GPU, bank, position in mock_gpu.mig) */
static unsigned char g_device_arena[MOCK_MAX_GPUS + MOCK_MAX_GPUS * MOCK_BANKS * MOCK_MAX_MIG];

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

void trace(const char *function)
{
    const char *path = getenv("MOCK_NVML_CALL_LOG");
    if (!path || !*path)
        return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    char line[128];
    int len = snprintf(line, sizeof line, "%d %s\n", (int)getpid(), function);
    if (write(fd, line, (size_t)len) != len)
        fprintf(stderr, "mock-nvml: cannot append to MOCK_NVML_CALL_LOG %s\n", path);
    close(fd);
}

void refresh(void)
{
    mock_control_refresh(&g_ctl, g_node);
}

int resolve(nvmlDevice_t handle, mock_gpu **gpu, mock_mig **mig)
{
    uintptr_t p = (uintptr_t)(void *)handle, base = (uintptr_t)g_device_arena;
    if (p < base || p >= base + sizeof g_device_arena)
        return 0;
    size_t i = p - base;
    if (i < MOCK_MAX_GPUS) {
        if (i >= g_node->gpu_count)
            return 0;
        *gpu = &g_node->gpus[i];
        *mig = NULL;
        return 1;
    }
    i -= MOCK_MAX_GPUS;
    size_t m = i % MOCK_MAX_MIG, bank = i / MOCK_MAX_MIG % MOCK_BANKS, g = i / MOCK_MAX_MIG / MOCK_BANKS;
    if (g >= g_node->gpu_count || bank != g_node->gpus[g].layout_generation % MOCK_BANKS ||
        m >= g_node->gpus[g].mig_count)
        return 0;
    *gpu = &g_node->gpus[g];
    *mig = &g_node->gpus[g].mig[m];
    return 1;
}

nvmlDevice_t gpu_handle(const mock_gpu *gpu)
{
    return (nvmlDevice_t)(void *)&g_device_arena[gpu->index];
}

nvmlDevice_t mig_handle(const mock_gpu *gpu, const mock_mig *mig)
{
    size_t bank = gpu->layout_generation % MOCK_BANKS;
    size_t slot = MOCK_MAX_GPUS + ((size_t)gpu->index * MOCK_BANKS + bank) * MOCK_MAX_MIG + (size_t)(mig - gpu->mig);
    return (nvmlDevice_t)(void *)&g_device_arena[slot];
}

nvmlReturn_t check_gpu(const mock_gpu *gpu)
{
    refresh();
    if (g_ctl.lost[gpu->index])
        return NVML_ERROR_GPU_IS_LOST;
    return mock_control_take_fault(&g_ctl, g_node, g_call, gpu->index);
}

nvmlReturn_t device_begin(nvmlDevice_t device, mock_gpu **gpu, mock_mig **mig, int args_ok)
{
    if (g_refcount == 0)
        return NVML_ERROR_UNINITIALIZED;
    refresh(); /* a `mig` command may have replaced the MIG device this handle named */
    if (!resolve(device, gpu, mig) || !args_ok)
        return NVML_ERROR_INVALID_ARGUMENT;
    return check_gpu(*gpu);
}

nvmlReturn_t copy_string(char *dst, unsigned int length, const char *src)
{
    if (strlen(src) + 1 > length)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return NVML_SUCCESS;
}

/* Queries real NVML answers without nvmlInit read the node description on the spot. */
static nvmlReturn_t peek_node(const mock_node **node, mock_node **scratch)
{
    *scratch = NULL;
    if (g_refcount > 0) {
        *node = g_node;
        return NVML_SUCCESS;
    }
    const char *path = getenv("MOCK_NVML_CONFIG");
    if (!path || !*path) {
        fprintf(stderr, "mock-nvml: MOCK_NVML_CONFIG is not set; it must name the JSON node description\n");
        return NVML_ERROR_UNKNOWN;
    }
    char err[512];
    *scratch = malloc(sizeof **scratch);
    if (!*scratch)
        return NVML_ERROR_MEMORY;
    if (!mock_node_load(path, *scratch, err, sizeof err)) {
        fprintf(stderr, "mock-nvml: invalid node description %s: %s\n", path, err);
        free(*scratch);
        *scratch = NULL;
        return NVML_ERROR_UNKNOWN;
    }
    *node = *scratch;
    return NVML_SUCCESS;
}

static void fill_pci(nvmlPciInfo_t *pci, const mock_pci_address *a, unsigned device_id, int version)
{
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, NVML_DEVICE_PCI_BUS_ID_LEGACY_FMT, a->domain, a->bus,
             a->device);
    pci->domain = a->domain;
    pci->bus = a->bus;
    pci->device = a->device;
    pci->pciDeviceId = device_id;
    if (version >= 3)
        snprintf(pci->busId, sizeof pci->busId, NVML_DEVICE_PCI_BUS_ID_FMT, a->domain, a->bus, a->device);
}

static struct nvmlEventSet_st *find_set(nvmlEventSet_t set)
{
    for (struct nvmlEventSet_st *s = g_sets; s; s = s->next)
        if (s == set && s->magic == SET_MAGIC)
            return s;
    return NULL;
}

static void free_sets(void)
{
    while (g_sets) {
        struct nvmlEventSet_st *next = g_sets->next;
        g_sets->magic = 0;
        free(g_sets->regs);
        free(g_sets);
        g_sets = next;
    }
}

/* ------------------------------------------------------------------------ */
/* Initialisation                                                            */

static nvmlReturn_t init(unsigned int flags, int legacy)
{
    const unsigned known = NVML_INIT_FLAG_NO_GPUS | NVML_INIT_FLAG_NO_ATTACH | NVML_INIT_FLAG_FORCE_INIT;
    if (flags & ~known)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (g_refcount > 0) {
        g_refcount++;
        return NVML_SUCCESS;
    }
    const char *path = getenv("MOCK_NVML_CONFIG");
    if (!path || !*path) {
        fprintf(stderr, "mock-nvml: nvmlInit failed: MOCK_NVML_CONFIG is not set; "
                        "it must name the JSON node description\n");
        return NVML_ERROR_UNKNOWN;
    }
    mock_node *node = malloc(sizeof *node);
    if (!node)
        return NVML_ERROR_MEMORY;
    char err[512];
    if (!mock_node_load(path, node, err, sizeof err)) {
        fprintf(stderr, "mock-nvml: nvmlInit failed: invalid node description %s: %s\n", path, err);
        free(node);
        return NVML_ERROR_UNKNOWN;
    }
    if (node->init_error != NVML_SUCCESS) {
        nvmlReturn_t rc = node->init_error;
        free(node);
        return rc;
    }
    g_node = node;
    mock_control_open(&g_ctl, getenv("MOCK_NVML_CONTROL"));
    refresh();
    if (legacy) {
        /* the pre-5.319 nvmlInit attached every GPU and failed if any was in a bad state */
        for (unsigned g = 0; g < node->gpu_count; g++) {
            if (g_ctl.lost[g]) {
                mock_control_close(&g_ctl);
                free(node);
                g_node = NULL;
                return NVML_ERROR_GPU_IS_LOST;
            }
        }
    }
    g_refcount = 1;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags)
{
    ENTER();
    LEAVE(init(flags, 0));
}

EXPORT nvmlReturn_t nvmlInit_v2(void)
{
    ENTER();
    LEAVE(init(0, 0));
}

EXPORT nvmlReturn_t nvmlInit(void)
{
    ENTER();
    LEAVE(init(0, 1));
}

EXPORT nvmlReturn_t nvmlShutdown(void)
{
    ENTER();
    if (g_refcount == 0)
        LEAVE(NVML_ERROR_UNINITIALIZED);
    if (--g_refcount == 0) {
        free_sets();
        mock_control_close(&g_ctl);
        free(g_node);
        g_node = NULL;
        g_generation++;
    }
    LEAVE(NVML_SUCCESS);
}

EXPORT const char *nvmlErrorString(nvmlReturn_t result)
{
    trace(__func__);
    return mock_error_string(result);
}

/* ------------------------------------------------------------------------ */
/* System queries                                                            */

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    ENTER();
    if (g_refcount == 0)
        LEAVE(NVML_ERROR_UNINITIALIZED);
    if (!version)
        LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    LEAVE(copy_string(version, length, g_node->driver_version));
}

EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length)
{
    ENTER();
    if (!version)
        LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    const mock_node *node;
    mock_node *scratch;
    nvmlReturn_t rc = peek_node(&node, &scratch);
    if (rc == NVML_SUCCESS)
        rc = copy_string(version, length, node->nvml_version);
    free(scratch);
    LEAVE(rc);
}

static nvmlReturn_t cuda_driver_version(int *out, int from_libcuda)
{
    if (!out)
        return NVML_ERROR_INVALID_ARGUMENT;
    const mock_node *node;
    mock_node *scratch;
    nvmlReturn_t rc = peek_node(&node, &scratch);
    if (rc == NVML_SUCCESS) {
        if (from_libcuda && !node->cuda_library_present)
            rc = NVML_ERROR_LIBRARY_NOT_FOUND;
        else
            *out = node->cuda_driver_version;
    }
    free(scratch);
    return rc;
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion)
{
    ENTER();
    LEAVE(cuda_driver_version(cudaDriverVersion, 0));
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *cudaDriverVersion)
{
    ENTER();
    LEAVE(cuda_driver_version(cudaDriverVersion, 1));
}

/* ------------------------------------------------------------------------ */
/* Enumeration                                                               */

static nvmlReturn_t device_count(unsigned int *count)
{
    if (g_refcount == 0)
        return NVML_ERROR_UNINITIALIZED;
    if (!count)
        return NVML_ERROR_INVALID_ARGUMENT;
    *count = g_node->gpu_count;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount)
{
    ENTER();
    LEAVE(device_count(deviceCount));
}

EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *deviceCount)
{
    ENTER();
    LEAVE(device_count(deviceCount));
}

static nvmlReturn_t handle_by_index(unsigned int index, nvmlDevice_t *device)
{
    if (g_refcount == 0)
        return NVML_ERROR_UNINITIALIZED;
    if (!device || index >= g_node->gpu_count)
        return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t rc = check_gpu(&g_node->gpus[index]);
    if (rc == NVML_SUCCESS)
        *device = gpu_handle(&g_node->gpus[index]);
    return rc;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    ENTER();
    LEAVE(handle_by_index(index, device));
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device)
{
    ENTER();
    LEAVE(handle_by_index(index, device));
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device)
{
    ENTER();
    if (g_refcount == 0)
        LEAVE(NVML_ERROR_UNINITIALIZED);
    if (!uuid || !device || (strncmp(uuid, "GPU-", 4) != 0 && strncmp(uuid, "MIG-", 4) != 0))
        LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    refresh(); /* MIG UUIDs change with `mig` commands */
    for (unsigned g = 0; g < g_node->gpu_count; g++) {
        mock_gpu *gpu = &g_node->gpus[g];
        nvmlDevice_t found = NULL;
        if (strcmp(gpu->uuid, uuid) == 0)
            found = gpu_handle(gpu);
        for (unsigned m = 0; !found && m < gpu->mig_count; m++)
            if (strcmp(gpu->mig[m].uuid, uuid) == 0)
                found = mig_handle(gpu, &gpu->mig[m]);
        if (found) {
            nvmlReturn_t rc = check_gpu(gpu);
            if (rc == NVML_SUCCESS)
                *device = found;
            LEAVE(rc);
        }
    }
    LEAVE(NVML_ERROR_NOT_FOUND);
}

static nvmlReturn_t handle_by_bus_id(const char *bus_id, nvmlDevice_t *device)
{
    if (g_refcount == 0)
        return NVML_ERROR_UNINITIALIZED;
    mock_pci_address a;
    int parsed = bus_id && device ? mock_parse_bus_id(bus_id, &a) : 0;
    if (!parsed)
        return NVML_ERROR_INVALID_ARGUMENT;
    for (unsigned g = 0; parsed == 1 && g < g_node->gpu_count; g++) {
        mock_gpu *gpu = &g_node->gpus[g];
        if (gpu->pci.domain == a.domain && gpu->pci.bus == a.bus && gpu->pci.device == a.device) {
            nvmlReturn_t rc = check_gpu(gpu);
            if (rc == NVML_SUCCESS)
                *device = gpu_handle(gpu);
            return rc;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *pciBusId, nvmlDevice_t *device)
{
    ENTER();
    LEAVE(handle_by_bus_id(pciBusId, device));
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char *pciBusId, nvmlDevice_t *device)
{
    ENTER();
    LEAVE(handle_by_bus_id(pciBusId, device));
}

/* ------------------------------------------------------------------------ */
/* Device identity and attributes                                            */

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length)
{
    ENTER();
    mock_gpu *gpu;
    mock_mig *mig;
    nvmlReturn_t rc = device_begin(device, &gpu, &mig, name != NULL);
    if (rc == NVML_SUCCESS)
        rc = copy_string(name, length, mig ? mig->name : gpu->name);
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length)
{
    ENTER();
    mock_gpu *gpu;
    mock_mig *mig;
    nvmlReturn_t rc = device_begin(device, &gpu, &mig, uuid != NULL);
    if (rc == NVML_SUCCESS)
        rc = copy_string(uuid, length, mig ? mig->uuid : gpu->uuid);
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index)
{
    ENTER();
    mock_gpu *gpu;
    mock_mig *mig;
    nvmlReturn_t rc = device_begin(device, &gpu, &mig, index != NULL);
    if (rc == NVML_SUCCESS)
        *index = mig ? mig->index : gpu->index;
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minorNumber)
{
    ENTER();
    mock_gpu *gpu;
    mock_mig *mig;
    nvmlReturn_t rc = device_begin(device, &gpu, &mig, minorNumber != NULL);
    if (rc == NVML_SUCCESS && mig)
        rc = NVML_ERROR_NOT_SUPPORTED; /* MIG devices are reached through /dev/nvidia-caps */
    if (rc == NVML_SUCCESS)
        *minorNumber = gpu->minor_number;
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlDeviceGetBrand(nvmlDevice_t device, nvmlBrandType_t *type)
{
    ENTER();
    mock_gpu *gpu;
    mock_mig *mig;
    nvmlReturn_t rc = device_begin(device, &gpu, &mig, type != NULL);
    if (rc == NVML_SUCCESS && !gpu->has_brand)
        rc = NVML_ERROR_NOT_SUPPORTED; /* the profile gives no brand */
    if (rc == NVML_SUCCESS)
        *type = gpu->brand;
    LEAVE(rc);
}

static nvmlReturn_t pci_info(nvmlDevice_t device, nvmlPciInfo_t *pci, int version)
{
    mock_gpu *gpu;
    mock_mig *mig;
    nvmlReturn_t rc = device_begin(device, &gpu, &mig, pci != NULL);
    if (rc == NVML_SUCCESS && mig)
        rc = NVML_ERROR_NOT_SUPPORTED; /* query the parent GPU */
    if (rc == NVML_SUCCESS) {
        fill_pci(pci, &gpu->pci, gpu->pci_device_id, version);
        if (version >= 2) /* the v1 struct had no sub-system id */
            pci->pciSubSystemId = gpu->pci_subsystem_id;
    }
    return rc;
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    ENTER();
    LEAVE(pci_info(device, pci, 3));
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    ENTER();
    LEAVE(pci_info(device, pci, 2));
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    ENTER();
    LEAVE(pci_info(device, pci, 1));
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory)
{
    ENTER();
    mock_gpu *gpu;
    mock_mig *mig;
    nvmlReturn_t rc = device_begin(device, &gpu, &mig, memory != NULL);
    if (rc == NVML_SUCCESS) {
        const mock_memory *m = mig ? &mig->memory : &gpu->memory;
        memory->total = m->total;
        memory->free = m->free;
        memory->used = m->used;
    }
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory)
{
    ENTER();
    mock_gpu *gpu;
    mock_mig *mig;
    nvmlReturn_t rc = device_begin(device, &gpu, &mig, memory != NULL);
    if (rc == NVML_SUCCESS && memory->version != nvmlMemory_v2)
        rc = NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (rc == NVML_SUCCESS) {
        const mock_memory *m = mig ? &mig->memory : &gpu->memory;
        memory->total = m->total;
        memory->reserved = m->reserved;
        memory->free = m->free;
        memory->used = m->used - m->reserved; /* v2 reports reserved separately */
    }
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major, int *minor)
{
    ENTER();
    mock_gpu *gpu;
    mock_mig *mig;
    nvmlReturn_t rc = device_begin(device, &gpu, &mig, major && minor);
    if (rc == NVML_SUCCESS) {
        *major = gpu->cc_major;
        *minor = gpu->cc_minor;
    }
    LEAVE(rc);
}

/* ------------------------------------------------------------------------ */
/* Topology and NVLink                                                       */

EXPORT nvmlReturn_t nvmlDeviceGetTopologyCommonAncestor(nvmlDevice_t device1, nvmlDevice_t device2,
                                                        nvmlGpuTopologyLevel_t *pathInfo)
{
    ENTER();
    mock_gpu *a, *b;
    mock_mig *ma, *mb;
    if (g_refcount == 0)
        LEAVE(NVML_ERROR_UNINITIALIZED);
    refresh();
    if (!resolve(device1, &a, &ma) || !resolve(device2, &b, &mb) || !pathInfo || a == b)
        LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    if (ma || mb)
        LEAVE(NVML_ERROR_NOT_SUPPORTED);
    nvmlReturn_t rc = check_gpu(a);
    if (rc == NVML_SUCCESS)
        rc = check_gpu(b);
    if (rc == NVML_SUCCESS)
        *pathInfo = g_node->topology[a->index][b->index];
    LEAVE(rc);
}

static nvmlReturn_t link_begin(nvmlDevice_t device, unsigned int link, int args_ok, mock_gpu **gpu,
                               const mock_link **out)
{
    mock_mig *mig;
    nvmlReturn_t rc = device_begin(device, gpu, &mig, args_ok);
    if (rc != NVML_SUCCESS)
        return rc;
    if (mig || !(*gpu)->has_nvlink)
        return NVML_ERROR_NOT_SUPPORTED;
    if (link >= NVML_NVLINK_MAX_LINKS || !(*gpu)->links[link].present)
        return NVML_ERROR_INVALID_ARGUMENT;
    *out = &(*gpu)->links[link];
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t device, unsigned int link, nvmlEnableState_t *isActive)
{
    ENTER();
    mock_gpu *gpu;
    const mock_link *l;
    nvmlReturn_t rc = link_begin(device, link, isActive != NULL, &gpu, &l);
    if (rc == NVML_SUCCESS)
        *isActive = l->active ? NVML_FEATURE_ENABLED : NVML_FEATURE_DISABLED;
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkCapability(nvmlDevice_t device, unsigned int link,
                                                  nvmlNvLinkCapability_t capability, unsigned int *capResult)
{
    ENTER();
    mock_gpu *gpu;
    const mock_link *l;
    nvmlReturn_t rc = link_begin(device, link, capResult != NULL && (unsigned)capability < NVML_NVLINK_CAP_COUNT,
                                 &gpu, &l);
    if (rc == NVML_SUCCESS) {
        /* a data-center GPU on an x86 host: P2P (and atomics) over NVLink, no system memory over it */
        switch (capability) {
        case NVML_NVLINK_CAP_P2P_SUPPORTED:
        case NVML_NVLINK_CAP_P2P_ATOMICS:
        case NVML_NVLINK_CAP_VALID:
            *capResult = 1;
            break;
        default:
            *capResult = 0;
            break;
        }
    }
    LEAVE(rc);
}

static nvmlReturn_t remote_pci(nvmlDevice_t device, unsigned int link, nvmlPciInfo_t *pci, int version)
{
    mock_gpu *gpu;
    const mock_link *l;
    nvmlReturn_t rc = link_begin(device, link, pci != NULL, &gpu, &l);
    if (rc == NVML_SUCCESS) /* pciSubSystemId is documented as not filled in */
        fill_pci(pci, &l->remote, l->remote_pci_device_id, version);
    return rc;
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkRemotePciInfo_v2(nvmlDevice_t device, unsigned int link, nvmlPciInfo_t *pci)
{
    ENTER();
    LEAVE(remote_pci(device, link, pci, 3));
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkRemotePciInfo(nvmlDevice_t device, unsigned int link, nvmlPciInfo_t *pci)
{
    ENTER();
    LEAVE(remote_pci(device, link, pci, 1));
}

/* ------------------------------------------------------------------------ */
/* Events                                                                    */

EXPORT nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device, unsigned long long *eventTypes)
{
    ENTER();
    mock_gpu *gpu;
    mock_mig *mig;
    nvmlReturn_t rc = device_begin(device, &gpu, &mig, eventTypes != NULL);
    if (rc == NVML_SUCCESS && mig)
        rc = NVML_ERROR_NOT_SUPPORTED; /* events are per physical GPU */
    if (rc == NVML_SUCCESS)
        *eventTypes = gpu->supported_events;
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set)
{
    ENTER();
    if (g_refcount == 0)
        LEAVE(NVML_ERROR_UNINITIALIZED);
    if (!set)
        LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    struct nvmlEventSet_st *s = calloc(1, sizeof *s);
    if (!s)
        LEAVE(NVML_ERROR_MEMORY);
    refresh();
    s->magic = SET_MAGIC;
    s->cursor = g_ctl.parsed;
    s->next = g_sets;
    g_sets = s;
    *set = s;
    LEAVE(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long eventTypes, nvmlEventSet_t set)
{
    ENTER();
    mock_gpu *gpu;
    mock_mig *mig;
    struct nvmlEventSet_st *s = g_refcount ? find_set(set) : NULL;
    int types_ok = eventTypes != 0 && (eventTypes & ~(unsigned long long)nvmlEventTypeAll) == 0;
    nvmlReturn_t rc = device_begin(device, &gpu, &mig, s != NULL && types_ok);
    if (rc == NVML_SUCCESS && mig)
        rc = NVML_ERROR_NOT_SUPPORTED;
    if (rc == NVML_SUCCESS && gpu->register_events_error != NVML_SUCCESS)
        rc = gpu->register_events_error;
    if (rc == NVML_SUCCESS && (eventTypes & ~gpu->supported_events))
        rc = NVML_ERROR_NOT_SUPPORTED; /* none of the requested types are registered then */
    if (rc == NVML_SUCCESS) {
        registration *regs = realloc(s->regs, (s->reg_count + 1) * sizeof *regs);
        if (!regs)
            LEAVE(NVML_ERROR_MEMORY);
        s->regs = regs;
        s->regs[s->reg_count++] = (registration){.gpu = gpu->index, .mask = eventTypes, .offset = g_ctl.parsed};
    }
    LEAVE(rc);
}

EXPORT nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set)
{
    ENTER();
    if (g_refcount == 0)
        LEAVE(NVML_ERROR_UNINITIALIZED);
    for (struct nvmlEventSet_st **p = &g_sets; *p; p = &(*p)->next) {
        if (*p == set) {
            struct nvmlEventSet_st *s = *p;
            *p = s->next;
            s->magic = 0;
            free(s->regs);
            free(s);
            LEAVE(NVML_SUCCESS);
        }
    }
    LEAVE(NVML_ERROR_INVALID_ARGUMENT);
}

static const mock_event *next_event(struct nvmlEventSet_st *s)
{
    for (size_t i = 0; i < g_ctl.event_count; i++) {
        const mock_event *e = &g_ctl.events[i];
        if (e->offset < s->cursor)
            continue;
        for (size_t r = 0; r < s->reg_count; r++) {
            const registration *reg = &s->regs[r];
            if (reg->gpu == e->gpu && (reg->mask & e->type) && e->offset >= reg->offset) {
                s->cursor = e->offset + 1;
                return e;
            }
        }
    }
    s->cursor = g_ctl.parsed;
    return NULL;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/*
 * Sleep (unlocked) for up to `ms`, polling the control file: with g_lock held.
 * NVML_SUCCESS when the time is up or `hang` (the offset of a wait_hang line,
 * or -1) is no longer the active hang; an error when NVML was shut down or
 * the set freed meanwhile.
 */
static nvmlReturn_t nap(nvmlEventSet_t set, unsigned long generation, double ms, long long hang)
{
    const double until = now_ms() + ms;
    for (;;) {
        double left = until - now_ms();
        if (left <= 0)
            return NVML_SUCCESS;
        long ns = left * 1e6 < POLL_INTERVAL_NS ? (long)(left * 1e6) : POLL_INTERVAL_NS;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = ns};
        pthread_mutex_unlock(&g_lock);
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&g_lock);
        if (g_refcount == 0 || g_generation != generation)
            return NVML_ERROR_UNINITIALIZED;
        if (!find_set(set))
            return NVML_ERROR_INVALID_ARGUMENT; /* freed while we waited */
        if (hang < 0)
            return NVML_SUCCESS; /* one poll interval: the caller re-checks the control file */
        refresh();
        if (g_ctl.wait_hang.offset != hang)
            return NVML_SUCCESS; /* cleared or replaced: the hang ends early */
    }
}

/*
 * Called and returns with g_lock held; sleeps (unlocked) between polls of the
 * control file. An injected hang comes first and ignores the timeout; after
 * it the wait goes on as usual until its own deadline (already past if the
 * hang outlasted it: then it checks for an event once and times out).
 */
static nvmlReturn_t event_wait(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms, int version)
{
    if (g_refcount == 0)
        return NVML_ERROR_UNINITIALIZED;
    if (!find_set(set) || !data)
        return NVML_ERROR_INVALID_ARGUMENT;
    const unsigned long generation = g_generation;
    const double deadline = now_ms() + timeoutms;
    refresh();
    long long hang_offset = -1;
    long long hang_ms = mock_control_take_wait_hang(&g_ctl, g_node, &hang_offset);
    if (hang_ms > 0) {
        nvmlReturn_t rc = nap(set, generation, (double)hang_ms, hang_offset);
        if (rc != NVML_SUCCESS)
            return rc;
    }
    for (;;) {
        refresh();
        nvmlReturn_t injected = mock_control_take_wait_error(&g_ctl, g_node);
        if (injected != NVML_SUCCESS)
            return injected;
        const mock_event *e = next_event(set);
        if (e) {
            data->device = gpu_handle(&g_node->gpus[e->gpu]);
            data->eventType = e->type;
            data->eventData = e->data;
            if (version >= 2) { /* the v1 struct ends after eventData */
                data->gpuInstanceId = e->gpu_instance_id;
                data->computeInstanceId = e->compute_instance_id;
            }
            return NVML_SUCCESS;
        }
        double left = deadline - now_ms();
        if (left <= 0)
            return NVML_ERROR_TIMEOUT;
        nvmlReturn_t rc = nap(set, generation, left, -1);
        if (rc != NVML_SUCCESS)
            return rc;
    }
}

EXPORT nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms)
{
    ENTER();
    LEAVE(event_wait(set, data, timeoutms, 2));
}

EXPORT nvmlReturn_t nvmlEventSetWait(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms)
{
    ENTER();
    LEAVE(event_wait(set, data, timeoutms, 1));
}
