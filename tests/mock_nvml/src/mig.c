/*
 * MIG catalogues, MIG devices and run-time re-layouts; see mig.h.
 *
 * A catalogue is what `nvidia-smi mig -lgip` / `-lcip` print for a product.
 * A MIG device names its profile ("1g.10gb+me", or "1c.2g.20gb" for a compute
 * instance smaller than its GPU instance); the catalogue supplies what NVML
 * derives from it (attributes, memory, instance profile ids, placements), and
 * the layout is checked the way the driver would refuse to create it.
 */
#include "mig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a freshly created MIG device reports as used memory (as an idle A100 MIG device does). */
#define MIG_USED_BYTES (13ULL << 20)

#define NAME(x) [x] = #x
static const char *const GI_PROFILES[NVML_GPU_INSTANCE_PROFILE_COUNT] = {
    NAME(NVML_GPU_INSTANCE_PROFILE_1_SLICE),       NAME(NVML_GPU_INSTANCE_PROFILE_2_SLICE),
    NAME(NVML_GPU_INSTANCE_PROFILE_3_SLICE),       NAME(NVML_GPU_INSTANCE_PROFILE_4_SLICE),
    NAME(NVML_GPU_INSTANCE_PROFILE_7_SLICE),       NAME(NVML_GPU_INSTANCE_PROFILE_8_SLICE),
    NAME(NVML_GPU_INSTANCE_PROFILE_6_SLICE),       NAME(NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1),
    NAME(NVML_GPU_INSTANCE_PROFILE_2_SLICE_REV1),  NAME(NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2),
    NAME(NVML_GPU_INSTANCE_PROFILE_1_SLICE_GFX),   NAME(NVML_GPU_INSTANCE_PROFILE_2_SLICE_GFX),
    NAME(NVML_GPU_INSTANCE_PROFILE_4_SLICE_GFX),   NAME(NVML_GPU_INSTANCE_PROFILE_1_SLICE_NO_ME),
    NAME(NVML_GPU_INSTANCE_PROFILE_2_SLICE_NO_ME), NAME(NVML_GPU_INSTANCE_PROFILE_1_SLICE_ALL_ME),
    NAME(NVML_GPU_INSTANCE_PROFILE_2_SLICE_ALL_ME), NAME(NVML_GPU_INSTANCE_PROFILE_3_SLICE_GFX),
};
static const char *const CI_PROFILES[NVML_COMPUTE_INSTANCE_PROFILE_COUNT] = {
    NAME(NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE),      NAME(NVML_COMPUTE_INSTANCE_PROFILE_2_SLICE),
    NAME(NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE),      NAME(NVML_COMPUTE_INSTANCE_PROFILE_4_SLICE),
    NAME(NVML_COMPUTE_INSTANCE_PROFILE_7_SLICE),      NAME(NVML_COMPUTE_INSTANCE_PROFILE_8_SLICE),
    NAME(NVML_COMPUTE_INSTANCE_PROFILE_6_SLICE),      NAME(NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE_REV1),
    NAME(NVML_COMPUTE_INSTANCE_PROFILE_7_SLICE_NVL),
};
#undef NAME

static int power_of_two(unsigned v)
{
    return v && !(v & (v - 1));
}

/*
 * GPU instance ids number the nodes of a binary tree over the memory slices,
 * as the driver does: the whole GPU is 0, its halves 1-2, quarters 3-6,
 * eighths 7-14 (so on A100/H100 a 3g instance at slice 4 is GI 2).
 */
static int gi_placement(unsigned total, unsigned id, unsigned *start, unsigned *size)
{
    unsigned level = 0;
    while ((2u << level) - 1 <= id)
        level++;
    if ((1u << level) > total)
        return 0;
    *size = total >> level;
    *start = (id - ((1u << level) - 1)) * *size;
    return 1;
}

static int get_enum(loader *ld, const json_value *obj, const char *where, const char *const *names, unsigned count,
                    unsigned *out)
{
    char name[64];
    if (!get_string(ld, obj, where, "profile", 1, name, sizeof name))
        return 0;
    for (unsigned i = 0; i < count; i++) {
        if (names[i] && strcmp(names[i], name) == 0) {
            *out = i;
            return 1;
        }
    }
    return bad(ld, "%s.profile: \"%s\" is not an NVML %s name such as \"%s\"", where, name,
               names == GI_PROFILES ? "GPU instance profile" : "compute instance profile", names[0]);
}

static int load_ci_profiles(loader *ld, const json_value *gp, const char *where, mock_gi_profile *gi)
{
    static const char *const keys[] = {"profile", "id", "slices", "instances", "multiprocessors", NULL};
    const json_value *list = member(ld, gp, where, "compute_instance_profiles", 1);
    if (!list)
        return 0;
    if (list->type != JSON_ARRAY || list->count == 0)
        return bad(ld, "%s.compute_instance_profiles: expected a non-empty array", where);
    for (size_t i = 0; i < list->count; i++) {
        char w[224];
        snprintf(w, sizeof w, "%s.compute_instance_profiles[%zu]", where, i);
        const json_value *c = list->items[i];
        unsigned at = 0;
        mock_ci_profile p = {.present = 1};
        if (!check_keys(ld, c, w, keys) || !get_enum(ld, c, w, CI_PROFILES, NVML_COMPUTE_INSTANCE_PROFILE_COUNT, &at) ||
            !get_uint(ld, c, w, "id", 1, &p.id) || !get_uint(ld, c, w, "slices", 1, &p.slices) ||
            !get_uint(ld, c, w, "instances", 1, &p.instances) ||
            !get_uint(ld, c, w, "multiprocessors", 1, &p.multiprocessors))
            return 0;
        if (gi->ci[at].present)
            return bad(ld, "%s.profile: %s is listed twice", w, CI_PROFILES[at]);
        if (p.slices == 0 || p.slices > gi->slices || p.instances == 0 || p.instances * p.slices > gi->slices)
            return bad(ld, "%s: %u instances of %u slices do not fit the %u slices of %s", w, p.instances, p.slices,
                       gi->slices, gi->name);
        gi->ci[at] = p;
    }
    return 1;
}

static int load_gi_profile(loader *ld, const json_value *p, const char *where, mock_catalogue *cat)
{
    static const char *const keys[] = {"profile", "id", "name", "slices", "memory_slices", "instances",
                                       "placements", "memory_mb", "multiprocessors", "copy_engines", "decoders",
                                       "encoders", "jpegs", "ofas", "compute_instance_profiles", NULL};
    unsigned at = 0;
    mock_gi_profile gi = {.present = 1};
    long long mb = 0;
    if (!check_keys(ld, p, where, keys) || !get_enum(ld, p, where, GI_PROFILES, NVML_GPU_INSTANCE_PROFILE_COUNT, &at) ||
        !get_uint(ld, p, where, "id", 1, &gi.id) || !get_string(ld, p, where, "name", 1, gi.name, sizeof gi.name) ||
        !get_uint(ld, p, where, "slices", 1, &gi.slices) ||
        !get_uint(ld, p, where, "memory_slices", 1, &gi.memory_slices) ||
        !get_uint(ld, p, where, "instances", 1, &gi.instances) ||
        !get_integer(ld, p, where, "memory_mb", 1, 1, 0x7FFFFFFFFFFFLL, &mb) ||
        !get_uint(ld, p, where, "multiprocessors", 1, &gi.multiprocessors) ||
        !get_uint(ld, p, where, "copy_engines", 1, &gi.copy_engines) ||
        !get_uint(ld, p, where, "decoders", 1, &gi.decoders) || !get_uint(ld, p, where, "encoders", 1, &gi.encoders) ||
        !get_uint(ld, p, where, "jpegs", 1, &gi.jpegs) || !get_uint(ld, p, where, "ofas", 1, &gi.ofas))
        return 0;
    gi.memory_mb = (unsigned long long)mb;
    if (cat->gi[at].present)
        return bad(ld, "%s.profile: %s is listed twice", where, GI_PROFILES[at]);
    for (unsigned k = 0; k < NVML_GPU_INSTANCE_PROFILE_COUNT; k++)
        if (cat->gi[k].present && (cat->gi[k].id == gi.id || strcmp(cat->gi[k].name, gi.name) == 0))
            return bad(ld, "%s: id %u or name \"%s\" is also used by %s", where, gi.id, gi.name, GI_PROFILES[k]);
    if (gi.slices == 0 || gi.slices > cat->compute_slices)
        return bad(ld, "%s.slices: must be 1..%u (compute_slices)", where, cat->compute_slices);
    if (!power_of_two(gi.memory_slices) || gi.memory_slices > cat->memory_slices)
        return bad(ld, "%s.memory_slices: must be a power of two up to %u", where, cat->memory_slices);
    if (gi.instances == 0)
        return bad(ld, "%s.instances: must be positive", where);
    const json_value *pl = member(ld, p, where, "placements", 1);
    if (!pl)
        return 0;
    if (pl->type != JSON_ARRAY || pl->count == 0 || pl->count > MOCK_MAX_PLACEMENTS)
        return bad(ld, "%s.placements: expected 1 to %d first memory slices", where, MOCK_MAX_PLACEMENTS);
    for (size_t i = 0; i < pl->count; i++) {
        const json_value *s = pl->items[i];
        if (s->type != JSON_NUMBER || !s->is_integer || s->integer < 0 || s->integer % gi.memory_slices ||
            s->integer + gi.memory_slices > cat->memory_slices)
            return bad(ld, "%s.placements[%zu]: not a multiple of memory_slices (%u) inside the %u memory slices",
                       where, i, gi.memory_slices, cat->memory_slices);
        gi.placements[gi.placement_count++] = (unsigned)s->integer;
    }
    if (!load_ci_profiles(ld, p, where, &gi))
        return 0;
    cat->gi[at] = gi;
    return 1;
}

int mock_mig_load_catalogues(loader *ld, const json_value *root, mock_node *node)
{
    static const char *const keys[] = {"compute_slices", "memory_slices", "gpu_instance_profiles", NULL};
    const json_value *all = json_get(root, "mig_catalogues");
    if (!all)
        return 1;
    if (all->type != JSON_OBJECT)
        return bad(ld, "mig_catalogues: expected an object, got %s", json_type_name(all->type));
    if (all->count > MOCK_MAX_CATALOGUES)
        return bad(ld, "mig_catalogues: at most %d supported by the mock", MOCK_MAX_CATALOGUES);
    for (size_t i = 0; i < all->count; i++) {
        mock_catalogue *cat = &node->catalogues[i];
        char w[96];
        snprintf(w, sizeof w, "mig_catalogues.%s", all->keys[i]);
        if (strlen(all->keys[i]) >= sizeof cat->key || !*all->keys[i])
            return bad(ld, "%s: the key must have 1 to %zu characters", w, sizeof cat->key - 1);
        snprintf(cat->key, sizeof cat->key, "%s", all->keys[i]);
        const json_value *c = all->items[i];
        if (!check_keys(ld, c, w, keys) || !get_uint(ld, c, w, "compute_slices", 1, &cat->compute_slices) ||
            !get_uint(ld, c, w, "memory_slices", 1, &cat->memory_slices))
            return 0;
        /* ids up to 2 * memory_slices - 2 must fit MOCK_MAX_GI_ID */
        if (!power_of_two(cat->memory_slices) || 2 * cat->memory_slices - 1 > MOCK_MAX_GI_ID)
            return bad(ld, "%s.memory_slices: must be 1, 2, 4 or 8", w);
        if (cat->compute_slices == 0 || cat->compute_slices > MOCK_MAX_MIG)
            return bad(ld, "%s.compute_slices: must be 1..%d", w, MOCK_MAX_MIG);
        const json_value *list = member(ld, c, w, "gpu_instance_profiles", 1);
        if (!list)
            return 0;
        if (list->type != JSON_ARRAY || list->count == 0)
            return bad(ld, "%s.gpu_instance_profiles: expected a non-empty array", w);
        for (size_t k = 0; k < list->count; k++) {
            char pw[160];
            snprintf(pw, sizeof pw, "%s.gpu_instance_profiles[%zu]", w, k);
            if (!load_gi_profile(ld, list->items[k], pw, cat))
                return 0;
        }
        node->catalogue_count++;
    }
    return 1;
}

/* "1g.10gb+me" or "1c.2g.20gb" (a 1-slice compute instance of a 2g.20gb GPU instance). */
static const char *resolve_profile(const mock_catalogue *cat, const char *profile, unsigned *gi, unsigned *ci)
{
    const char *name = profile;
    unsigned c = 0;
    const char *dot = strchr(profile, '.');
    if (dot && dot > profile && dot[-1] == 'c') {
        char *end;
        c = (unsigned)strtoul(profile, &end, 10);
        if (end != dot - 1 || c == 0)
            return "a compute instance prefix must look like \"1c.\"";
        name = dot + 1;
    }
    for (unsigned g = 0; g < NVML_GPU_INSTANCE_PROFILE_COUNT; g++) {
        const mock_gi_profile *p = &cat->gi[g];
        if (!p->present || strcmp(p->name, name) != 0)
            continue;
        if (c == p->slices)
            return "a compute instance as large as its GPU instance is named without the \"<n>c.\" prefix";
        if (c == 0)
            c = p->slices;
        for (unsigned k = 0; k < NVML_COMPUTE_INSTANCE_PROFILE_COUNT; k++) {
            if (p->ci[k].present && p->ci[k].slices == c) {
                *gi = g;
                *ci = k;
                return NULL;
            }
        }
        return "the GPU instance profile has no compute instance profile of that many slices";
    }
    return "no such GPU instance profile in the GPU's MIG catalogue";
}

/* What NVML reports for a MIG device of this profile: nvmlDeviceGetAttributes and the memory info. */
static void derive(const mock_gpu *gpu, const mock_mig *m, nvmlDeviceAttributes_t *at, mock_memory *mem)
{
    const mock_gi_profile *gi = &gpu->catalogue->gi[m->gi_profile];
    const mock_ci_profile *ci = &gi->ci[m->ci_profile];
    *at = (nvmlDeviceAttributes_t){
        .multiprocessorCount = ci->multiprocessors,
        .sharedCopyEngineCount = gi->copy_engines,
        .sharedDecoderCount = gi->decoders,
        .sharedEncoderCount = gi->encoders,
        .sharedJpegCount = gi->jpegs,
        .sharedOfaCount = gi->ofas,
        .gpuInstanceSliceCount = gi->slices,
        .computeInstanceSliceCount = ci->slices,
        .memorySizeMB = gi->memory_mb,
    };
    mem->total = gi->memory_mb << 20;
    mem->used = MIG_USED_BYTES < mem->total ? MIG_USED_BYTES : 0;
    mem->free = mem->total - mem->used;
    mem->reserved = 0;
}

static int load_attributes(loader *ld, const json_value *m, const char *where, nvmlDeviceAttributes_t *at)
{
    static const char *const keys[] = {"multiprocessor_count", "shared_copy_engine_count", "shared_decoder_count",
                                       "shared_encoder_count", "shared_jpeg_count", "shared_ofa_count",
                                       "gpu_instance_slice_count", "compute_instance_slice_count",
                                       "memory_size_mb", NULL};
    char w[160];
    snprintf(w, sizeof w, "%s.attributes", where);
    const json_value *a = member(ld, m, where, "attributes", 1);
    long long mb;
    if (!a || !check_keys(ld, a, w, keys) ||
        !get_uint(ld, a, w, "multiprocessor_count", 1, &at->multiprocessorCount) ||
        !get_uint(ld, a, w, "shared_copy_engine_count", 1, &at->sharedCopyEngineCount) ||
        !get_uint(ld, a, w, "shared_decoder_count", 1, &at->sharedDecoderCount) ||
        !get_uint(ld, a, w, "shared_encoder_count", 1, &at->sharedEncoderCount) ||
        !get_uint(ld, a, w, "shared_jpeg_count", 1, &at->sharedJpegCount) ||
        !get_uint(ld, a, w, "shared_ofa_count", 1, &at->sharedOfaCount) ||
        !get_uint(ld, a, w, "gpu_instance_slice_count", 1, &at->gpuInstanceSliceCount) ||
        !get_uint(ld, a, w, "compute_instance_slice_count", 1, &at->computeInstanceSliceCount) ||
        !get_integer(ld, a, w, "memory_size_mb", 1, 1, 0x7FFFFFFFFFFFFFFFLL, &mb))
        return 0;
    at->memorySizeMB = (unsigned long long)mb;
    return 1;
}

static int load_mig(loader *ld, const json_value *m, const char *where, const mock_gpu *gpu, mock_mig *mig)
{
    static const char *const keys[] = {"index", "uuid", "name", "profile", "gpu_instance_id",
                                       "compute_instance_id", "memory", "attributes", NULL};
    memset(mig, 0, sizeof *mig);
    if (!check_keys(ld, m, where, keys) || !get_uint(ld, m, where, "index", 1, &mig->index) ||
        !get_string(ld, m, where, "uuid", 1, mig->uuid, sizeof mig->uuid) ||
        !get_string(ld, m, where, "profile", 1, mig->profile, sizeof mig->profile) ||
        !get_uint(ld, m, where, "gpu_instance_id", 1, &mig->gpu_instance_id) ||
        !get_uint(ld, m, where, "compute_instance_id", 1, &mig->compute_instance_id))
        return 0;
    if (strncmp(mig->uuid, "MIG-", 4) != 0)
        return bad(ld, "%s.uuid: \"%s\" must start with \"MIG-\"", where, mig->uuid);
    if (json_get(m, "name")) {
        if (!get_string(ld, m, where, "name", 1, mig->name, sizeof mig->name))
            return 0;
    } else if ((size_t)snprintf(mig->name, sizeof mig->name, "%s MIG %s", gpu->name, mig->profile) >=
               sizeof mig->name) {
        return bad(ld, "%s: the derived MIG device name is too long; set \"name\"", where);
    }
    if (!gpu->catalogue) /* no catalogue: the profile says everything */
        return get_memory(ld, m, where, &mig->memory) && load_attributes(ld, m, where, &mig->attributes);

    const char *problem = resolve_profile(gpu->catalogue, mig->profile, &mig->gi_profile, &mig->ci_profile);
    if (problem)
        return bad(ld, "%s.profile: \"%s\": %s \"%s\"", where, mig->profile, problem, gpu->catalogue->key);
    derive(gpu, mig, &mig->attributes, &mig->memory);
    if (json_get(m, "memory")) {
        mock_memory given;
        if (!get_memory(ld, m, where, &given))
            return 0;
        if (given.total != mig->memory.total)
            return bad(ld, "%s.memory.total: %llu, but %s has %llu MiB (%llu bytes)", where, given.total,
                       mig->profile, gpu->catalogue->gi[mig->gi_profile].memory_mb, mig->memory.total);
        mig->memory = given;
    }
    if (json_get(m, "attributes")) {
        nvmlDeviceAttributes_t given = {0};
        if (!load_attributes(ld, m, where, &given))
            return 0;
        if (memcmp(&given, &mig->attributes, sizeof given) != 0)
            return bad(ld, "%s.attributes: differ from what the catalogue \"%s\" gives %s (leave them out to derive "
                           "them)", where, gpu->catalogue->key, mig->profile);
    }
    return 1;
}

/* Refuse what the driver would refuse to create: overlapping, oversized or misplaced instances. */
static int check_layout(loader *ld, const char *where, const mock_gpu *gpu, mock_mig *migs, unsigned count)
{
    for (unsigned i = 0; i < count; i++) {
        for (unsigned k = 0; k < i; k++) {
            if (migs[k].index == migs[i].index)
                return bad(ld, "%s[%u].index: %u is already used by [%u]", where, i, migs[i].index, k);
            if (migs[k].gpu_instance_id == migs[i].gpu_instance_id &&
                migs[k].compute_instance_id == migs[i].compute_instance_id)
                return bad(ld, "%s[%u]: GPU instance %u / compute instance %u is already used by [%u]", where, i,
                           migs[i].gpu_instance_id, migs[i].compute_instance_id, k);
        }
        if (migs[i].index >= gpu->mig_max_devices)
            return bad(ld, "%s[%u].index: %u is not below mig.max_devices (%u)", where, i, migs[i].index,
                       gpu->mig_max_devices);
    }
    const mock_catalogue *cat = gpu->catalogue;
    if (!cat)
        return 1;
    int seen[MOCK_MAX_GI_ID] = {0};
    unsigned profile_of[MOCK_MAX_GI_ID] = {0}, ci_slices[MOCK_MAX_GI_ID] = {0};
    unsigned gi_count[NVML_GPU_INSTANCE_PROFILE_COUNT] = {0};
    unsigned memory_used = 0, compute_used = 0;
    for (unsigned i = 0; i < count; i++) {
        mock_mig *m = &migs[i];
        const mock_gi_profile *gp = &cat->gi[m->gi_profile];
        unsigned gi = m->gpu_instance_id;
        if (gi >= MOCK_MAX_GI_ID || !gi_placement(cat->memory_slices, gi, &m->gi_start, &m->gi_size) ||
            m->gi_size != gp->memory_slices)
            return bad(ld, "%s[%u].gpu_instance_id: %u does not span the %u memory slices of %s", where, i, gi,
                       gp->memory_slices, gp->name);
        int allowed = 0;
        for (unsigned p = 0; p < gp->placement_count; p++)
            allowed |= gp->placements[p] == m->gi_start;
        if (!allowed)
            return bad(ld, "%s[%u].gpu_instance_id: %u starts at memory slice %u, not a placement of %s", where, i,
                       gi, m->gi_start, gp->name);
        if (m->compute_instance_id >= MOCK_MAX_CI_ID)
            return bad(ld, "%s[%u].compute_instance_id: must be below %d", where, i, MOCK_MAX_CI_ID);
        if (seen[gi] && profile_of[gi] != m->gi_profile)
            return bad(ld, "%s[%u]: GPU instance %u is %s, not %s", where, i, gi, cat->gi[profile_of[gi]].name,
                       gp->name);
        if (!seen[gi]) {
            unsigned mask = ((1u << m->gi_size) - 1) << m->gi_start;
            if (memory_used & mask)
                return bad(ld, "%s[%u]: GPU instance %u overlaps the memory of another GPU instance", where, i, gi);
            memory_used |= mask;
            compute_used += gp->slices;
            if (compute_used > cat->compute_slices)
                return bad(ld, "%s[%u]: the GPU instances need more than %u compute slices", where, i,
                           cat->compute_slices);
            if (++gi_count[m->gi_profile] > gp->instances)
                return bad(ld, "%s[%u]: more than %u GPU instances of %s", where, i, gp->instances, gp->name);
            seen[gi] = 1;
            profile_of[gi] = m->gi_profile;
        }
        /* compute instances fill their GPU instance in compute instance id order */
        m->ci_start = 0;
        for (unsigned k = 0; k < count; k++)
            if (migs[k].gpu_instance_id == gi && migs[k].compute_instance_id < m->compute_instance_id)
                m->ci_start += cat->gi[migs[k].gi_profile].ci[migs[k].ci_profile].slices;
        ci_slices[gi] += gp->ci[m->ci_profile].slices;
        if (ci_slices[gi] > gp->slices)
            return bad(ld, "%s[%u]: the compute instances of GPU instance %u need more than its %u slices", where, i,
                       gi, gp->slices);
    }
    return 1;
}

static int load_devices(loader *ld, const json_value *list, const char *where, const mock_gpu *gpu, mock_mig *out,
                        unsigned *count)
{
    if (list->type != JSON_ARRAY)
        return bad(ld, "%s: expected an array, got %s", where, json_type_name(list->type));
    if (list->count && (!gpu->mig_capable || gpu->mig_current != 1))
        return bad(ld, "%s: MIG devices need MIG mode enabled (\"mig\": {\"current\": 1, ...})", where);
    if (list->count > gpu->mig_max_devices)
        return bad(ld, "%s: %zu devices exceed mig.max_devices (%u)", where, list->count, gpu->mig_max_devices);
    for (size_t i = 0; i < list->count; i++) {
        char w[128];
        snprintf(w, sizeof w, "%s[%zu]", where, i);
        if (!load_mig(ld, list->items[i], w, gpu, &out[i]))
            return 0;
    }
    *count = (unsigned)list->count;
    return check_layout(ld, where, gpu, out, *count);
}

int mock_mig_load_gpu(loader *ld, const json_value *g, const char *where, mock_node *node, mock_gpu *gpu)
{
    static const char *const keys[] = {"current", "pending", "max_devices", "catalogue", NULL};
    char w[96];
    const json_value *mig = json_get(g, "mig");
    if (mig) {
        snprintf(w, sizeof w, "%s.mig", where);
        char key[MOCK_PROFILE_LEN] = "";
        if (!check_keys(ld, mig, w, keys) || !get_uint(ld, mig, w, "current", 1, &gpu->mig_current) ||
            !get_uint(ld, mig, w, "pending", 1, &gpu->mig_pending) ||
            !get_string(ld, mig, w, "catalogue", 0, key, sizeof key))
            return 0;
        if (gpu->mig_current > 1 || gpu->mig_pending > 1)
            return bad(ld, "%s: current and pending must be 0 (NVML_DEVICE_MIG_DISABLE) or 1 "
                           "(NVML_DEVICE_MIG_ENABLE)", w);
        gpu->mig_capable = 1;
        gpu->mig_max_enabled = 7;
        if (!get_uint(ld, mig, w, "max_devices", 0, &gpu->mig_max_enabled))
            return 0;
        if (gpu->mig_max_enabled > MOCK_MAX_MIG)
            return bad(ld, "%s.max_devices: at most %d supported by the mock", w, MOCK_MAX_MIG);
        gpu->mig_max_devices = gpu->mig_current ? gpu->mig_max_enabled : 0;
        for (unsigned c = 0; *key && c < node->catalogue_count; c++)
            if (strcmp(node->catalogues[c].key, key) == 0)
                gpu->catalogue = &node->catalogues[c];
        if (*key && !gpu->catalogue)
            return bad(ld, "%s.catalogue: \"%s\" is not a key of \"mig_catalogues\"", w, key);
    }
    const json_value *migs = json_get(g, "mig_devices");
    snprintf(w, sizeof w, "%s.mig_devices", where);
    return !migs || load_devices(ld, migs, w, gpu, gpu->mig, &gpu->mig_count);
}

int mock_mig_relayout(mock_node *node, unsigned gpu, unsigned mode, unsigned pending, const char *layout_path,
                      char *err, size_t errlen)
{
    mock_gpu *old = &node->gpus[gpu];
    if (!old->mig_capable) {
        snprintf(err, errlen, "GPU %u is not MIG-capable (its profile has no \"mig\")", gpu);
        return 0;
    }
    mock_gpu *next = malloc(sizeof *next);
    if (!next) {
        snprintf(err, errlen, "out of memory");
        return 0;
    }
    *next = *old;
    next->mig_current = mode;
    next->mig_pending = pending;
    next->mig_max_devices = mode ? next->mig_max_enabled : 0;
    next->mig_count = 0;
    loader ld = {.err = err, .errlen = errlen, .failed = 0};
    int ok = 1;
    if (layout_path && *layout_path) {
        char jerr[256];
        char *text = read_file(layout_path, jerr, sizeof jerr);
        json_value *list = text ? json_parse(text, jerr, sizeof jerr) : NULL;
        free(text);
        if (!list)
            ok = bad(&ld, "layout %s: %s", layout_path, jerr);
        else
            ok = load_devices(&ld, list, "layout", next, next->mig, &next->mig_count);
        json_free(list);
    }
    for (unsigned g = 0; ok && g < node->gpu_count; g++)
        for (unsigned k = 0; ok && g != gpu && k < node->gpus[g].mig_count; k++)
            for (unsigned m = 0; ok && m < next->mig_count; m++)
                if (strcmp(node->gpus[g].mig[k].uuid, next->mig[m].uuid) == 0)
                    ok = bad(&ld, "layout[%u].uuid: %s is a MIG device of GPU %u", m, next->mig[m].uuid, g);
    if (ok) {
        next->layout_generation++;
        *old = *next;
    }
    free(next);
    return ok;
}
