/*
 * The simulated node: what the mock NVML reports, loaded from the JSON node
 * description named by MOCK_NVML_CONFIG (see tests/mock_nvml/README.md for
 * the schema). Loaded by nvmlInit (from refcount 0) and by the few queries
 * that real NVML answers without initialisation.
 */
#ifndef MOCK_NVML_NODE_H
#define MOCK_NVML_NODE_H

#include <nvml.h>
#include <stddef.h>

#define MOCK_MAX_GPUS 64
#define MOCK_MAX_MIG 16
#define MOCK_UUID_LEN 96
#define MOCK_NAME_LEN 96
#define MOCK_MAX_CATALOGUES 8
#define MOCK_PROFILE_LEN 32
#define MOCK_MAX_GI_ID 15 /* GPU instance ids 0..14 on 8 memory slices */
#define MOCK_MAX_CI_ID 8  /* compute instance ids 0..7 within a GPU instance */
#define MOCK_MAX_PLACEMENTS 8

/* The three event types upstream health checking registers. */
#define MOCK_DEFAULT_EVENTS \
    (nvmlEventTypeXidCriticalError | nvmlEventTypeDoubleBitEccError | nvmlEventTypeSingleBitEccError)

typedef struct {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;     /* v1 semantics: reserved + allocated */
    unsigned long long reserved; /* reported separately by the v2 struct */
} mock_memory;

typedef struct {
    unsigned domain, bus, device;
} mock_pci_address;

typedef struct {
    int present;
    int active;
    mock_pci_address remote;
    unsigned remote_pci_device_id;
} mock_link;

/* A compute instance profile of a GPU instance profile (nvmlComputeInstanceProfileInfo_t). */
typedef struct {
    int present;
    unsigned id, slices, instances, multiprocessors;
} mock_ci_profile;

/* A GPU instance profile (nvmlGpuInstanceProfileInfo_t), at its NVML_GPU_INSTANCE_PROFILE_* position. */
typedef struct {
    int present;
    char name[MOCK_PROFILE_LEN]; /* "1g.10gb+me"; NVML's info.name is "MIG " + name */
    unsigned id, slices, memory_slices, instances;
    unsigned placements[MOCK_MAX_PLACEMENTS]; /* allowed first memory slices */
    unsigned placement_count;
    unsigned multiprocessors, copy_engines, decoders, encoders, jpegs, ofas;
    unsigned long long memory_mb;
    mock_ci_profile ci[NVML_COMPUTE_INSTANCE_PROFILE_COUNT];
} mock_gi_profile;

/* What a product's MIG mode can be carved into (top-level "mig_catalogues"). */
typedef struct {
    char key[MOCK_PROFILE_LEN];
    unsigned compute_slices, memory_slices;
    mock_gi_profile gi[NVML_GPU_INSTANCE_PROFILE_COUNT];
} mock_catalogue;

typedef struct {
    unsigned index; /* MIG device index under its parent */
    char uuid[MOCK_UUID_LEN];
    char name[MOCK_NAME_LEN];
    char profile[MOCK_PROFILE_LEN];
    unsigned gpu_instance_id;
    unsigned compute_instance_id;
    mock_memory memory;
    nvmlDeviceAttributes_t attributes;
    /* resolved from the catalogue (all 0 without one) */
    unsigned gi_profile, ci_profile; /* NVML_GPU_INSTANCE_PROFILE_* / NVML_COMPUTE_INSTANCE_PROFILE_* */
    unsigned gi_start, gi_size;      /* memory slices of the GPU instance */
    unsigned ci_start;               /* first compute slice within the GPU instance */
} mock_mig;

typedef struct {
    unsigned index;
    char uuid[MOCK_UUID_LEN];
    char name[MOCK_NAME_LEN];
    int has_brand;
    nvmlBrandType_t brand;
    unsigned minor_number;
    mock_pci_address pci;
    unsigned pci_device_id;
    unsigned pci_subsystem_id;
    mock_memory memory;
    int numa_node; /* -1: none; only used for the default topology */
    int cc_major, cc_minor;
    int mig_capable;
    unsigned mig_current, mig_pending, mig_max_devices;
    unsigned mig_max_enabled; /* mig_max_devices while MIG is enabled */
    const mock_catalogue *catalogue; /* NULL: no GPU/compute instance queries */
    unsigned layout_generation;      /* bumped by every `mig` control command on this GPU */
    unsigned mig_count;
    mock_mig mig[MOCK_MAX_MIG];
    unsigned long long supported_events;
    nvmlReturn_t register_events_error; /* NVML_SUCCESS: none */
    int has_nvlink;
    mock_link links[NVML_NVLINK_MAX_LINKS];
} mock_gpu;

typedef struct {
    char path[4096];
    char driver_version[NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE];
    char nvml_version[NVML_SYSTEM_NVML_VERSION_BUFFER_SIZE];
    int cuda_driver_version;
    int cuda_library_present;
    nvmlReturn_t init_error;
    unsigned catalogue_count;
    mock_catalogue catalogues[MOCK_MAX_CATALOGUES];
    unsigned gpu_count;
    mock_gpu gpus[MOCK_MAX_GPUS];
    nvmlGpuTopologyLevel_t topology[MOCK_MAX_GPUS][MOCK_MAX_GPUS];
} mock_node;

/*
 * Load the node description at path into *node. On failure return 0 and
 * write a one-line explanation (naming the JSON path of the bad value) to err.
 */
int mock_node_load(const char *path, mock_node *node, char *err, size_t errlen);

/* Error-name table shared by the loader, the control file and nvmlErrorString. */
int mock_error_from_name(const char *name, nvmlReturn_t *out);
const char *mock_error_string(nvmlReturn_t code);

/* Parse an NVML PCI bus id as nvmlDeviceGetHandleByPciBusId accepts it. */
int mock_parse_bus_id(const char *text, mock_pci_address *out);

#endif
