/*
 * Loads and validates the JSON node description into a mock_node.
 *
 * Validation is strict (unknown keys, wrong types, duplicate ids and
 * inconsistent memory figures are errors) so that a typo in a test profile
 * fails nvmlInit loudly instead of silently simulating a different node.
 */
#include "node.h"

#include "json.h"
#include "loader.h"
#include "mig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Error names and strings                                                   */

static const struct {
    nvmlReturn_t code;
    const char *name;
    const char *text;
} ERRORS[] = {
    {NVML_SUCCESS, "NVML_SUCCESS", "Success"},
    {NVML_ERROR_UNINITIALIZED, "NVML_ERROR_UNINITIALIZED", "Uninitialized"},
    {NVML_ERROR_INVALID_ARGUMENT, "NVML_ERROR_INVALID_ARGUMENT", "Invalid Argument"},
    {NVML_ERROR_NOT_SUPPORTED, "NVML_ERROR_NOT_SUPPORTED", "Not Supported"},
    {NVML_ERROR_NO_PERMISSION, "NVML_ERROR_NO_PERMISSION", "Insufficient Permissions"},
    {NVML_ERROR_ALREADY_INITIALIZED, "NVML_ERROR_ALREADY_INITIALIZED", "Already Initialized"},
    {NVML_ERROR_NOT_FOUND, "NVML_ERROR_NOT_FOUND", "Not Found"},
    {NVML_ERROR_INSUFFICIENT_SIZE, "NVML_ERROR_INSUFFICIENT_SIZE", "Insufficient Size"},
    {NVML_ERROR_INSUFFICIENT_POWER, "NVML_ERROR_INSUFFICIENT_POWER", "Insufficient External Power"},
    {NVML_ERROR_DRIVER_NOT_LOADED, "NVML_ERROR_DRIVER_NOT_LOADED", "Driver Not Loaded"},
    {NVML_ERROR_TIMEOUT, "NVML_ERROR_TIMEOUT", "Timeout"},
    {NVML_ERROR_IRQ_ISSUE, "NVML_ERROR_IRQ_ISSUE", "Interrupt Request Issue"},
    {NVML_ERROR_LIBRARY_NOT_FOUND, "NVML_ERROR_LIBRARY_NOT_FOUND", "NVML Shared Library Not Found"},
    {NVML_ERROR_FUNCTION_NOT_FOUND, "NVML_ERROR_FUNCTION_NOT_FOUND", "Function Not Found"},
    {NVML_ERROR_CORRUPTED_INFOROM, "NVML_ERROR_CORRUPTED_INFOROM", "Corrupted infoROM"},
    {NVML_ERROR_GPU_IS_LOST, "NVML_ERROR_GPU_IS_LOST", "GPU is lost"},
    {NVML_ERROR_RESET_REQUIRED, "NVML_ERROR_RESET_REQUIRED", "GPU requires restart"},
    {NVML_ERROR_OPERATING_SYSTEM, "NVML_ERROR_OPERATING_SYSTEM", "The operating system has blocked the request."},
    {NVML_ERROR_LIB_RM_VERSION_MISMATCH, "NVML_ERROR_LIB_RM_VERSION_MISMATCH",
     "RM has detected an NVML/RM version mismatch."},
    {NVML_ERROR_IN_USE, "NVML_ERROR_IN_USE", "In use by another client"},
    {NVML_ERROR_MEMORY, "NVML_ERROR_MEMORY", "Insufficient Memory"},
    {NVML_ERROR_NO_DATA, "NVML_ERROR_NO_DATA", "No data"},
    {NVML_ERROR_VGPU_ECC_NOT_SUPPORTED, "NVML_ERROR_VGPU_ECC_NOT_SUPPORTED",
     "The requested vgpu operation is not available on target device, because ECC is enabled"},
    {NVML_ERROR_INSUFFICIENT_RESOURCES, "NVML_ERROR_INSUFFICIENT_RESOURCES", "Insufficient resources"},
    {NVML_ERROR_FREQ_NOT_SUPPORTED, "NVML_ERROR_FREQ_NOT_SUPPORTED", "Frequency not supported"},
    {NVML_ERROR_ARGUMENT_VERSION_MISMATCH, "NVML_ERROR_ARGUMENT_VERSION_MISMATCH", "Argument version mismatch"},
    {NVML_ERROR_DEPRECATED, "NVML_ERROR_DEPRECATED", "Deprecated"},
    {NVML_ERROR_NOT_READY, "NVML_ERROR_NOT_READY", "Not ready"},
    {NVML_ERROR_GPU_NOT_FOUND, "NVML_ERROR_GPU_NOT_FOUND", "GPU not found"},
    {NVML_ERROR_INVALID_STATE, "NVML_ERROR_INVALID_STATE", "Invalid state"},
    {NVML_ERROR_RESET_TYPE_NOT_SUPPORTED, "NVML_ERROR_RESET_TYPE_NOT_SUPPORTED", "Reset type not supported"},
    {NVML_ERROR_UNKNOWN, "NVML_ERROR_UNKNOWN", "Unknown Error"},
};

int mock_error_from_name(const char *name, nvmlReturn_t *out)
{
    for (size_t i = 0; i < sizeof ERRORS / sizeof ERRORS[0]; i++) {
        if (strcmp(ERRORS[i].name, name) == 0) {
            *out = ERRORS[i].code;
            return 1;
        }
    }
    return 0;
}

const char *mock_error_string(nvmlReturn_t code)
{
    for (size_t i = 0; i < sizeof ERRORS / sizeof ERRORS[0]; i++)
        if (ERRORS[i].code == code)
            return ERRORS[i].text;
    return "Unknown Error";
}

/* ------------------------------------------------------------------------ */
/* PCI bus ids                                                               */

static int parse_hex_field(const char *start, const char *end, unsigned long max, unsigned *out)
{
    if (start == end || end - start > 8)
        return 0;
    unsigned long v = 0;
    for (const char *c = start; c < end; c++) {
        int d;
        if (*c >= '0' && *c <= '9')
            d = *c - '0';
        else if (*c >= 'a' && *c <= 'f')
            d = *c - 'a' + 10;
        else if (*c >= 'A' && *c <= 'F')
            d = *c - 'A' + 10;
        else
            return 0;
        v = v * 16 + (unsigned long)d;
    }
    if (v > max)
        return 0;
    *out = (unsigned)v;
    return 1;
}

/*
 * Accepts what nvmlDeviceGetHandleByPciBusId_v2 documents: domain:bus:device.function,
 * domain:bus:device and bus:device.function (all hex). Returns 1 and fills out
 * (plus the function number) on success.
 */
static int parse_bus_id_full(const char *text, mock_pci_address *out, unsigned *function)
{
    const char *colon1 = strchr(text, ':');
    if (!colon1)
        return 0;
    const char *colon2 = strchr(colon1 + 1, ':');
    const char *dot = strchr(text, '.');
    const char *end = text + strlen(text);
    unsigned domain = 0, bus, device, fn = 0;
    if (colon2) {
        if (strchr(colon2 + 1, ':'))
            return 0;
        if (!parse_hex_field(text, colon1, 0xFFFFFFFFUL, &domain) ||
            !parse_hex_field(colon1 + 1, colon2, 0xFF, &bus))
            return 0;
        if (dot) {
            if (dot < colon2 || !parse_hex_field(colon2 + 1, dot, 0x1F, &device) ||
                !parse_hex_field(dot + 1, end, 0x7, &fn))
                return 0;
        } else if (!parse_hex_field(colon2 + 1, end, 0x1F, &device)) {
            return 0;
        }
    } else {
        if (!dot || dot < colon1 || !parse_hex_field(text, colon1, 0xFF, &bus) ||
            !parse_hex_field(colon1 + 1, dot, 0x1F, &device) || !parse_hex_field(dot + 1, end, 0x7, &fn))
            return 0;
    }
    out->domain = domain;
    out->bus = bus;
    out->device = device;
    *function = fn;
    return 1;
}

int mock_parse_bus_id(const char *text, mock_pci_address *out)
{
    unsigned fn;
    if (!parse_bus_id_full(text, out, &fn))
        return 0;
    return fn == 0 ? 1 : 2; /* 2: well-formed, but GPUs are always function 0 */
}

/* The canonical NVML form, e.g. "00000000:18:00.0", as the profile must spell it. */
static int is_canonical_bus_id(const char *text, mock_pci_address *out)
{
    mock_pci_address a;
    unsigned fn;
    if (strlen(text) != 16 || !parse_bus_id_full(text, &a, &fn) || fn != 0)
        return 0;
    char canon[NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE];
    snprintf(canon, sizeof canon, NVML_DEVICE_PCI_BUS_ID_FMT, a.domain, a.bus, a.device);
    if (strcmp(canon, text) != 0)
        return 0;
    *out = a;
    return 1;
}


/* A 32-bit id written as a hex string ("0x233010DE") or as an integer. */
static int get_id32(loader *ld, const json_value *obj, const char *where, const char *key, unsigned *out)
{
    const json_value *v = member(ld, obj, where, key, 1);
    if (!v)
        return 0;
    if (v->type == JSON_STRING) {
        const char *s = v->string;
        if (strncmp(s, "0x", 2) != 0 && strncmp(s, "0X", 2) != 0)
            return bad(ld, "%s.%s: \"%s\" must be a hex string starting with 0x", where, key, s);
        if (!parse_hex_field(s + 2, s + strlen(s), 0xFFFFFFFFUL, out))
            return bad(ld, "%s.%s: \"%s\" is not a 32-bit hex number", where, key, s);
        return 1;
    }
    return get_uint(ld, obj, where, key, 1, out);
}


static const struct {
    const char *name;
    unsigned long long bit;
} EVENT_TYPES[] = {
    {"nvmlEventTypeSingleBitEccError", nvmlEventTypeSingleBitEccError},
    {"nvmlEventTypeDoubleBitEccError", nvmlEventTypeDoubleBitEccError},
    {"nvmlEventTypePState", nvmlEventTypePState},
    {"nvmlEventTypeXidCriticalError", nvmlEventTypeXidCriticalError},
    {"nvmlEventTypeClock", nvmlEventTypeClock},
    {"nvmlEventTypePowerSourceChange", nvmlEventTypePowerSourceChange},
    {"nvmlEventMigConfigChange", nvmlEventMigConfigChange},
};

static int get_event_mask(loader *ld, const json_value *obj, const char *where, unsigned long long *out)
{
    const json_value *v = json_get(obj, "supported_events");
    *out = MOCK_DEFAULT_EVENTS;
    if (!v)
        return 1;
    if (v->type != JSON_ARRAY)
        return bad(ld, "%s.supported_events: expected an array of event type names, got %s", where,
                   json_type_name(v->type));
    *out = 0;
    for (size_t i = 0; i < v->count; i++) {
        const json_value *e = v->items[i];
        int found = 0;
        for (size_t k = 0; e->type == JSON_STRING && k < sizeof EVENT_TYPES / sizeof EVENT_TYPES[0]; k++) {
            if (strcmp(EVENT_TYPES[k].name, e->string) == 0) {
                *out |= EVENT_TYPES[k].bit;
                found = 1;
            }
        }
        if (!found)
            return bad(ld, "%s.supported_events[%zu]: expected an event type name such as "
                           "\"nvmlEventTypeXidCriticalError\"", where, i);
    }
    return 1;
}

static const struct {
    const char *name;
    nvmlGpuTopologyLevel_t level;
} LEVELS[] = {
    {"NVML_TOPOLOGY_INTERNAL", NVML_TOPOLOGY_INTERNAL},   {"NVML_TOPOLOGY_SINGLE", NVML_TOPOLOGY_SINGLE},
    {"NVML_TOPOLOGY_MULTIPLE", NVML_TOPOLOGY_MULTIPLE},   {"NVML_TOPOLOGY_HOSTBRIDGE", NVML_TOPOLOGY_HOSTBRIDGE},
    {"NVML_TOPOLOGY_NODE", NVML_TOPOLOGY_NODE},           {"NVML_TOPOLOGY_SYSTEM", NVML_TOPOLOGY_SYSTEM},
};

static int level_from_value(const json_value *v, nvmlGpuTopologyLevel_t *out)
{
    for (size_t k = 0; v->type == JSON_STRING && k < sizeof LEVELS / sizeof LEVELS[0]; k++) {
        if (strcmp(LEVELS[k].name, v->string) == 0) {
            *out = LEVELS[k].level;
            return 1;
        }
    }
    return 0;
}

static int get_level(loader *ld, const json_value *obj, const char *where, nvmlGpuTopologyLevel_t *out)
{
    const json_value *v = member(ld, obj, where, "level", 1);
    if (!v)
        return 0;
    if (!level_from_value(v, out))
        return bad(ld, "%s.level: expected a level name such as \"NVML_TOPOLOGY_NODE\"", where);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Sections                                                                  */

static int load_links(loader *ld, const json_value *g, const char *where, mock_gpu *gpu)
{
    static const char *const keys[] = {"link", "remote_bus_id", "remote_pci_device_id", "active", NULL};
    const json_value *links = json_get(g, "nvlinks");
    if (!links)
        return 1;
    if (links->type != JSON_ARRAY)
        return bad(ld, "%s.nvlinks: expected an array, got %s", where, json_type_name(links->type));
    gpu->has_nvlink = 1;
    for (size_t i = 0; i < links->count; i++) {
        char w[128];
        snprintf(w, sizeof w, "%s.nvlinks[%zu]", where, i);
        const json_value *l = links->items[i];
        unsigned n = 0;
        char remote[NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE];
        if (!check_keys(ld, l, w, keys) || !get_uint(ld, l, w, "link", 1, &n) ||
            !get_string(ld, l, w, "remote_bus_id", 1, remote, sizeof remote))
            return 0;
        if (n >= NVML_NVLINK_MAX_LINKS)
            return bad(ld, "%s.link: %u is not below NVML_NVLINK_MAX_LINKS (%d)", w, n, NVML_NVLINK_MAX_LINKS);
        mock_link *link = &gpu->links[n];
        if (link->present)
            return bad(ld, "%s.link: link %u is listed twice", w, n);
        link->present = 1;
        link->active = 1;
        if (!is_canonical_bus_id(remote, &link->remote))
            return bad(ld, "%s.remote_bus_id: \"%s\" is not an NVML bus id like \"00000000:18:00.0\"", w, remote);
        if (!get_id32(ld, l, w, "remote_pci_device_id", &link->remote_pci_device_id) ||
            !get_bool(ld, l, w, "active", &link->active))
            return 0;
    }
    return 1;
}

static int load_gpu(loader *ld, const json_value *g, unsigned position, mock_node *node, mock_gpu *gpu)
{
    static const char *const keys[] = {"index", "uuid", "name", "brand", "minor_number", "pci", "memory",
                                       "numa_node", "compute_capability", "mig", "mig_devices",
                                       "supported_events", "register_events_error", "nvlinks", NULL};
    static const char *const pci_keys[] = {"bus_id", "device_id", "subsystem_id", NULL};
    char where[64];
    snprintf(where, sizeof where, "gpus[%u]", position);
    if (!check_keys(ld, g, where, keys) || !get_uint(ld, g, where, "index", 1, &gpu->index) ||
        !get_string(ld, g, where, "uuid", 1, gpu->uuid, sizeof gpu->uuid) ||
        !get_string(ld, g, where, "name", 1, gpu->name, sizeof gpu->name) ||
        !get_uint(ld, g, where, "minor_number", 1, &gpu->minor_number) || !get_memory(ld, g, where, &gpu->memory) ||
        !get_event_mask(ld, g, where, &gpu->supported_events) ||
        !get_error(ld, g, where, "register_events_error", &gpu->register_events_error) ||
        !load_links(ld, g, where, gpu))
        return 0;
    if (gpu->index != position)
        return bad(ld, "%s.index: GPUs must be listed in NVML index order; expected %u, got %u", where, position,
                   gpu->index);
    if (strncmp(gpu->uuid, "GPU-", 4) != 0)
        return bad(ld, "%s.uuid: \"%s\" must start with \"GPU-\"", where, gpu->uuid);

    const json_value *brand = json_get(g, "brand");
    if (brand) {
        static const struct {
            const char *name;
            nvmlBrandType_t value;
        } BRANDS[] = {
            {"NVML_BRAND_QUADRO", NVML_BRAND_QUADRO}, {"NVML_BRAND_TESLA", NVML_BRAND_TESLA},
            {"NVML_BRAND_NVS", NVML_BRAND_NVS},       {"NVML_BRAND_GEFORCE", NVML_BRAND_GEFORCE},
            {"NVML_BRAND_TITAN", NVML_BRAND_TITAN},   {"NVML_BRAND_NVIDIA_RTX", NVML_BRAND_NVIDIA_RTX},
            {"NVML_BRAND_NVIDIA", NVML_BRAND_NVIDIA}, {"NVML_BRAND_QUADRO_RTX", NVML_BRAND_QUADRO_RTX},
        };
        for (size_t k = 0; brand->type == JSON_STRING && k < sizeof BRANDS / sizeof BRANDS[0]; k++) {
            if (strcmp(BRANDS[k].name, brand->string) == 0) {
                gpu->has_brand = 1;
                gpu->brand = BRANDS[k].value;
            }
        }
        if (!gpu->has_brand)
            return bad(ld, "%s.brand: expected a brand name such as \"NVML_BRAND_NVIDIA\"", where);
    }

    char w[96];
    snprintf(w, sizeof w, "%s.pci", where);
    const json_value *pci = member(ld, g, where, "pci", 1);
    char bus_id[NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE];
    if (!pci || !check_keys(ld, pci, w, pci_keys) || !get_string(ld, pci, w, "bus_id", 1, bus_id, sizeof bus_id) ||
        !get_id32(ld, pci, w, "device_id", &gpu->pci_device_id) ||
        !get_id32(ld, pci, w, "subsystem_id", &gpu->pci_subsystem_id))
        return 0;
    if (!is_canonical_bus_id(bus_id, &gpu->pci))
        return bad(ld, "%s.bus_id: \"%s\" is not an NVML bus id like \"00000000:18:00.0\" "
                       "(8-digit domain, upper-case hex, function 0)", w, bus_id);

    const json_value *numa = member(ld, g, where, "numa_node", 1);
    if (!numa)
        return 0;
    if (numa->type == JSON_NULL) {
        gpu->numa_node = -1;
    } else {
        long long n;
        if (!get_integer(ld, g, where, "numa_node", 1, 0, 1023, &n))
            return 0;
        gpu->numa_node = (int)n;
    }

    const json_value *cc = member(ld, g, where, "compute_capability", 1);
    if (!cc)
        return 0;
    if (cc->type != JSON_ARRAY || cc->count != 2 || cc->items[0]->type != JSON_NUMBER ||
        !cc->items[0]->is_integer || cc->items[1]->type != JSON_NUMBER || !cc->items[1]->is_integer ||
        cc->items[0]->integer < 1 || cc->items[0]->integer > 99 || cc->items[1]->integer < 0 ||
        cc->items[1]->integer > 9)
        return bad(ld, "%s.compute_capability: expected [major, minor] such as [9, 0]", where);
    gpu->cc_major = (int)cc->items[0]->integer;
    gpu->cc_minor = (int)cc->items[1]->integer;

    return mock_mig_load_gpu(ld, g, where, node, gpu);
}

static int load_topology(loader *ld, const json_value *root, mock_node *node)
{
    static const char *const keys[] = {"default", "groups", "pairs", NULL};
    static const char *const entry_keys[] = {"gpus", "level", NULL};
    const json_value *t = json_get(root, "topology");
    for (unsigned i = 0; i < node->gpu_count; i++) {
        for (unsigned j = 0; j < node->gpu_count; j++) {
            int same = node->gpus[i].numa_node >= 0 && node->gpus[i].numa_node == node->gpus[j].numa_node;
            node->topology[i][j] = same ? NVML_TOPOLOGY_NODE : NVML_TOPOLOGY_SYSTEM;
        }
    }
    if (!t)
        return 1;
    if (!check_keys(ld, t, "topology", keys))
        return 0;
    const json_value *def = json_get(t, "default");
    if (def) {
        nvmlGpuTopologyLevel_t level;
        if (!level_from_value(def, &level))
            return bad(ld, "topology.default: expected a level name such as \"NVML_TOPOLOGY_SYSTEM\"");
        for (unsigned i = 0; i < node->gpu_count; i++)
            for (unsigned j = 0; j < node->gpu_count; j++)
                node->topology[i][j] = level;
    }
    /* groups first, then pairs, so a pair can override its group's level */
    const char *sections[] = {"groups", "pairs"};
    for (int s = 0; s < 2; s++) {
        const json_value *list = json_get(t, sections[s]);
        if (!list)
            continue;
        if (list->type != JSON_ARRAY)
            return bad(ld, "topology.%s: expected an array, got %s", sections[s], json_type_name(list->type));
        for (size_t e = 0; e < list->count; e++) {
            char w[64];
            snprintf(w, sizeof w, "topology.%s[%zu]", sections[s], e);
            const json_value *entry = list->items[e];
            nvmlGpuTopologyLevel_t level = NVML_TOPOLOGY_SYSTEM;
            if (!check_keys(ld, entry, w, entry_keys) || !get_level(ld, entry, w, &level))
                return 0;
            const json_value *gpus = member(ld, entry, w, "gpus", 1);
            if (!gpus)
                return 0;
            size_t want = s == 1 ? 2 : 0;
            if (gpus->type != JSON_ARRAY || gpus->count < 2 || (want && gpus->count != want))
                return bad(ld, "%s.gpus: expected %s of GPU indices", w, s == 1 ? "a pair" : "a list of at least two");
            for (size_t a = 0; a < gpus->count; a++) {
                const json_value *x = gpus->items[a];
                if (x->type != JSON_NUMBER || !x->is_integer || x->integer < 0 ||
                    x->integer >= (long long)node->gpu_count)
                    return bad(ld, "%s.gpus[%zu]: not the index of a GPU in \"gpus\"", w, a);
            }
            for (size_t a = 0; a < gpus->count; a++) {
                for (size_t b = 0; b < gpus->count; b++) {
                    long long i = gpus->items[a]->integer, j = gpus->items[b]->integer;
                    if (i != j) {
                        node->topology[i][j] = level;
                        node->topology[j][i] = level;
                    }
                }
            }
        }
    }
    return 1;
}

static int check_unique(loader *ld, const mock_node *node)
{
    /* every UUID (GPU or MIG), bus id and minor number must identify one device */
    for (unsigned i = 0; i < node->gpu_count; i++) {
        const mock_gpu *a = &node->gpus[i];
        for (unsigned j = 0; j < i; j++) {
            const mock_gpu *b = &node->gpus[j];
            if (strcmp(a->uuid, b->uuid) == 0)
                return bad(ld, "gpus[%u].uuid: \"%s\" is also the UUID of gpus[%u]", i, a->uuid, j);
            if (a->minor_number == b->minor_number)
                return bad(ld, "gpus[%u].minor_number: %u is also the minor number of gpus[%u]", i, a->minor_number, j);
            if (a->pci.domain == b->pci.domain && a->pci.bus == b->pci.bus && a->pci.device == b->pci.device)
                return bad(ld, "gpus[%u].pci.bus_id: also the bus id of gpus[%u]", i, j);
        }
        for (unsigned m = 0; m < a->mig_count; m++) {
            for (unsigned j = 0; j <= i; j++) {
                const mock_gpu *b = &node->gpus[j];
                for (unsigned n = 0; n < (j == i ? m : b->mig_count); n++)
                    if (strcmp(a->mig[m].uuid, b->mig[n].uuid) == 0)
                        return bad(ld, "gpus[%u].mig_devices[%u].uuid: \"%s\" is used twice", i, m, a->mig[m].uuid);
            }
        }
    }
    return 1;
}


int mock_node_load(const char *path, mock_node *node, char *err, size_t errlen)
{
    static const char *const keys[] = {"description", "driver_version", "cuda_driver_version", "nvml_version",
                                       "cuda_library_present", "init_error", "topology", "mig_catalogues", "gpus",
                                       NULL};
    memset(node, 0, sizeof *node);
    snprintf(node->path, sizeof node->path, "%s", path);
    char jerr[256];
    char *text = read_file(path, jerr, sizeof jerr);
    if (!text) {
        snprintf(err, errlen, "%s", jerr);
        return 0;
    }
    json_value *root = json_parse(text, jerr, sizeof jerr);
    free(text);
    if (!root) {
        snprintf(err, errlen, "invalid JSON: %s", jerr);
        return 0;
    }
    loader ld = {.err = err, .errlen = errlen, .failed = 0};
    long long cuda = 0;
    int ok = check_keys(&ld, root, "(top level)", keys) &&
             get_string(&ld, root, "(top level)", "driver_version", 1, node->driver_version,
                        sizeof node->driver_version) &&
             get_string(&ld, root, "(top level)", "nvml_version", 1, node->nvml_version, sizeof node->nvml_version) &&
             get_integer(&ld, root, "(top level)", "cuda_driver_version", 1, 1000, 99999, &cuda) &&
             get_error(&ld, root, "(top level)", "init_error", &node->init_error);
    node->cuda_driver_version = (int)cuda;
    node->cuda_library_present = 1;
    ok = ok && get_bool(&ld, root, "(top level)", "cuda_library_present", &node->cuda_library_present);
    ok = ok && mock_mig_load_catalogues(&ld, root, node);
    const json_value *gpus = ok ? member(&ld, root, "(top level)", "gpus", 1) : NULL;
    if (gpus && gpus->type != JSON_ARRAY)
        ok = bad(&ld, "gpus: expected an array, got %s", json_type_name(gpus->type));
    else if (gpus && gpus->count > MOCK_MAX_GPUS)
        ok = bad(&ld, "gpus: %zu GPUs; the mock supports at most %d", gpus->count, MOCK_MAX_GPUS);
    if (ok && gpus) {
        for (size_t i = 0; ok && i < gpus->count; i++)
            ok = load_gpu(&ld, gpus->items[i], (unsigned)i, node, &node->gpus[i]);
        node->gpu_count = (unsigned)gpus->count;
    }
    ok = ok && !ld.failed && check_unique(&ld, node) && load_topology(&ld, root, node);
    json_free(root);
    return ok && !ld.failed;
}
