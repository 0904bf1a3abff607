/* Incremental reader of the control file; see control.h for the line format. */
#define _GNU_SOURCE /* dladdr */
#include "control.h"

#include "mig.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_TOKENS 8

static void warn_line(const mock_control *ctl, long long offset, const char *line, const char *problem)
{
    fprintf(stderr, "mock-nvml: %s: ignoring control line at byte %lld \"%s\": %s\n", ctl->path, offset, line,
            problem);
}

void mock_control_open(mock_control *ctl, const char *path)
{
    memset(ctl, 0, sizeof *ctl);
    ctl->fd = -1;
    ctl->wait_error.offset = -1;
    ctl->wait_hang.offset = -1;
    if (path)
        snprintf(ctl->path, sizeof ctl->path, "%s", path);
}

void mock_control_close(mock_control *ctl)
{
    if (ctl->fd >= 0)
        close(ctl->fd);
    free(ctl->events);
    mock_control_open(ctl, NULL);
}

static int parse_ll(const char *text, long long *out)
{
    if (!*text)
        return 0;
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || *end)
        return 0;
    *out = v;
    return 1;
}

/* Resolve a GPU reference; a MIG UUID also yields its instance ids. */
static int resolve_gpu(const mock_node *node, const char *ref, unsigned *gpu, const mock_mig **mig)
{
    long long index;
    *mig = NULL;
    if (parse_ll(ref, &index)) {
        if (index < 0 || index >= (long long)node->gpu_count)
            return 0;
        *gpu = (unsigned)index;
        return 1;
    }
    for (unsigned g = 0; g < node->gpu_count; g++) {
        if (strcmp(node->gpus[g].uuid, ref) == 0) {
            *gpu = g;
            return 1;
        }
        for (unsigned m = 0; m < node->gpus[g].mig_count; m++) {
            if (strcmp(node->gpus[g].mig[m].uuid, ref) == 0) {
                *gpu = g;
                *mig = &node->gpus[g].mig[m];
                return 1;
            }
        }
    }
    return 0;
}

static const char *arg(char *const *keys, char *const *values, int n, const char *key)
{
    for (int i = 0; i < n; i++)
        if (strcmp(keys[i], key) == 0)
            return values[i];
    return NULL;
}

/*
 * Whether `fail fn=<name>` can ever fire: the name must be exported by this
 * library (looked up in our own dynamic symbol table, so the list cannot go
 * stale) and be a per-GPU function (a device, GPU instance or compute
 * instance query); the device counts concern no GPU.
 */
static int faultable(const char *fn)
{
    int per_gpu = strncmp(fn, "nvmlDevice", 10) == 0 || strncmp(fn, "nvmlGpuInstance", 15) == 0 ||
                  strncmp(fn, "nvmlComputeInstance", 19) == 0;
    if (!per_gpu || strncmp(fn, "nvmlDeviceGetCount", 18) == 0 || strlen(fn) >= MOCK_FN_LEN)
        return 0;
    Dl_info self;
    if (!dladdr((void *)mock_control_open, &self) || !self.dli_fname)
        return 1; /* cannot tell: let the command through */
    void *lib = dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD);
    if (!lib)
        return 1;
    int found = dlsym(lib, fn) != NULL;
    dlclose(lib);
    return found;
}

static mock_injection *find_injection(mock_control *ctl, long long offset)
{
    if (offset < 0)
        return NULL;
    if (ctl->wait_error.offset == offset)
        return &ctl->wait_error;
    if (ctl->wait_hang.offset == offset)
        return &ctl->wait_hang;
    for (size_t i = 0; i < ctl->fault_count; i++)
        if (ctl->faults[i].injection.offset == offset)
            return &ctl->faults[i].injection;
    return NULL;
}

/* Record (or replace, or with count 0 cancel) the fault for one (function, GPU). */
static const char *set_fault(mock_control *ctl, const mock_fault *fault)
{
    size_t i = 0;
    while (i < ctl->fault_count && !(ctl->faults[i].gpu == fault->gpu && strcmp(ctl->faults[i].fn, fault->fn) == 0))
        i++;
    if (fault->injection.count == 0) {
        if (i < ctl->fault_count)
            ctl->faults[i] = ctl->faults[--ctl->fault_count];
        return NULL;
    }
    if (i == ctl->fault_count) {
        if (ctl->fault_count == MOCK_MAX_FAULTS)
            return "too many active faults (one per function and GPU; clear some)";
        ctl->fault_count++;
    }
    ctl->faults[i] = *fault;
    return NULL;
}

static int add_event(mock_control *ctl, const mock_event *event)
{
    if (ctl->event_count == ctl->event_cap) {
        size_t cap = ctl->event_cap ? ctl->event_cap * 2 : 64;
        mock_event *events = realloc(ctl->events, cap * sizeof *events);
        if (!events)
            return 0;
        ctl->events = events;
        ctl->event_cap = cap;
    }
    ctl->events[ctl->event_count++] = *event;
    return 1;
}

static void apply_line(mock_control *ctl, mock_node *node, long long offset, char *line)
{
    char original[256];
    snprintf(original, sizeof original, "%s", line);
    char *keys[MAX_TOKENS], *values[MAX_TOKENS];
    int n = 0;
    char *save = NULL;
    char *command = strtok_r(line, " \t", &save);
    if (!command || command[0] == '#')
        return;
    for (char *tok = strtok_r(NULL, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq || n == MAX_TOKENS) {
            warn_line(ctl, offset, original, "arguments must be key=value");
            return;
        }
        *eq = '\0';
        keys[n] = tok;
        values[n++] = eq + 1;
    }

    if (strcmp(command, "clear") == 0) {
        memset(ctl->lost, 0, sizeof ctl->lost);
        ctl->wait_error.offset = -1;
        ctl->wait_hang.offset = -1;
        ctl->fault_count = 0;
        return;
    }
    if (strcmp(command, "wait_error") == 0) {
        const char *code = arg(keys, values, n, "code");
        const char *count = arg(keys, values, n, "count");
        nvmlReturn_t rc;
        long long c;
        if (!code || !mock_error_from_name(code, &rc) || rc == NVML_SUCCESS || !count || !parse_ll(count, &c) ||
            c < -1) {
            warn_line(ctl, offset, original, "expected code=<NVML_ERROR_NAME> count=<n or -1>");
            return;
        }
        ctl->wait_error = (mock_injection){.offset = offset, .code = rc, .count = c};
        return;
    }
    if (strcmp(command, "wait_hang") == 0) {
        const char *ms = arg(keys, values, n, "ms");
        const char *count = arg(keys, values, n, "count");
        long long m, c = 1;
        if (!ms || !parse_ll(ms, &m) || m < 1 || (count && (!parse_ll(count, &c) || c < -1))) {
            warn_line(ctl, offset, original, "expected ms=<n >= 1> [count=<n or -1>]");
            return;
        }
        /* take() hands back a non-success code to mean "taken"; a hang has no code of its own */
        ctl->wait_hang = (mock_injection){.offset = offset, .code = NVML_ERROR_TIMEOUT, .count = c};
        ctl->wait_hang_ms = m;
        return;
    }
    if (strcmp(command, "wait_error_consumed") == 0 || strcmp(command, "fail_consumed") == 0 ||
        strcmp(command, "wait_hang_consumed") == 0) {
        const char *of = arg(keys, values, n, "of");
        long long o;
        mock_injection *injection = of && parse_ll(of, &o) ? find_injection(ctl, o) : NULL;
        if (injection)
            injection->consumed++;
        return;
    }

    const char *ref = arg(keys, values, n, "gpu");
    unsigned gpu;
    const mock_mig *mig;
    if (!ref || !resolve_gpu(node, ref, &gpu, &mig)) {
        warn_line(ctl, offset, original, "gpu= must name a GPU of the node (index, GPU- or MIG- UUID)");
        return;
    }
    if (strcmp(command, "lose") == 0) {
        ctl->lost[gpu] = 1;
        return;
    }
    if (strcmp(command, "mig") == 0) {
        const char *mode = arg(keys, values, n, "mode");
        const char *pending = arg(keys, values, n, "pending");
        const char *layout = arg(keys, values, n, "layout");
        long long m, p;
        if (!mode || !parse_ll(mode, &m) || (m != 0 && m != 1) ||
            (pending && (!parse_ll(pending, &p) || (p != 0 && p != 1)))) {
            warn_line(ctl, offset, original, "expected mode=0|1 [pending=0|1] [layout=<JSON file>]");
            return;
        }
        if (!pending)
            p = m;
        char problem[512];
        if (!mock_mig_relayout(node, gpu, (unsigned)m, (unsigned)p, layout, problem, sizeof problem)) {
            warn_line(ctl, offset, original, problem);
            return;
        }
        /* delivered to sets that registered nvmlEventMigConfigChange, as the driver does */
        mock_event ev = {.offset = offset, .gpu = gpu, .type = nvmlEventMigConfigChange,
                         .gpu_instance_id = 0xFFFFFFFFu, .compute_instance_id = 0xFFFFFFFFu};
        if (!add_event(ctl, &ev))
            warn_line(ctl, offset, original, "out of memory");
        return;
    }
    if (strcmp(command, "fail") == 0) {
        const char *fn = arg(keys, values, n, "fn");
        const char *code = arg(keys, values, n, "code");
        const char *count = arg(keys, values, n, "count");
        mock_fault fault = {.gpu = gpu, .injection = {.offset = offset, .count = -1}};
        if (!fn || !code || !mock_error_from_name(code, &fault.injection.code) ||
            fault.injection.code == NVML_SUCCESS || (count && (!parse_ll(count, &fault.injection.count) ||
                                                               fault.injection.count < -1))) {
            warn_line(ctl, offset, original, "expected fn=<function> code=<NVML_ERROR_NAME> [count=<n or -1>]");
            return;
        }
        if (!faultable(fn)) {
            warn_line(ctl, offset, original, "fn= must name a per-GPU nvmlDevice* function the mock exports");
            return;
        }
        snprintf(fault.fn, sizeof fault.fn, "%s", fn);
        const char *problem = set_fault(ctl, &fault);
        if (problem)
            warn_line(ctl, offset, original, problem);
        return;
    }
    mock_event ev = {.offset = offset, .gpu = gpu, .gpu_instance_id = 0xFFFFFFFFu,
                     .compute_instance_id = 0xFFFFFFFFu};
    if (strcmp(command, "xid") == 0) {
        const char *xid = arg(keys, values, n, "xid");
        const char *gi = arg(keys, values, n, "gi");
        const char *ci = arg(keys, values, n, "ci");
        long long x, g = -1, c = -1;
        if (!xid || !parse_ll(xid, &x) || x < 0 || (!gi) != (!ci) || (gi && (!parse_ll(gi, &g) || g < 0)) ||
            (ci && (!parse_ll(ci, &c) || c < 0))) {
            warn_line(ctl, offset, original, "expected xid=<n> and optionally both gi=<n> ci=<n>");
            return;
        }
        ev.type = nvmlEventTypeXidCriticalError;
        ev.data = (unsigned long long)x;
        if (gi) {
            ev.gpu_instance_id = (unsigned)g;
            ev.compute_instance_id = (unsigned)c;
        } else if (mig) {
            ev.gpu_instance_id = mig->gpu_instance_id;
            ev.compute_instance_id = mig->compute_instance_id;
        }
    } else if (strcmp(command, "ecc") == 0) {
        const char *bits = arg(keys, values, n, "bits");
        if (bits && strcmp(bits, "single") == 0)
            ev.type = nvmlEventTypeSingleBitEccError;
        else if (bits && strcmp(bits, "double") == 0)
            ev.type = nvmlEventTypeDoubleBitEccError;
        else {
            warn_line(ctl, offset, original, "expected bits=single or bits=double");
            return;
        }
    } else {
        warn_line(ctl, offset, original, "unknown command");
        return;
    }
    if (!add_event(ctl, &ev))
        warn_line(ctl, offset, original, "out of memory");
}

void mock_control_refresh(mock_control *ctl, mock_node *node)
{
    if (!ctl->path[0])
        return;
    if (ctl->fd < 0) {
        ctl->fd = open(ctl->path, O_RDWR | O_APPEND | O_CLOEXEC);
        if (ctl->fd < 0)
            return; /* not created yet: no commands */
    }
    struct stat st;
    if (fstat(ctl->fd, &st) != 0 || st.st_size == ctl->parsed)
        return;
    if (st.st_size < ctl->parsed) {
        fprintf(stderr, "mock-nvml: %s: the control file shrank; it must only be appended to. Re-reading it.\n",
                ctl->path);
        char path[sizeof ctl->path];
        memcpy(path, ctl->path, sizeof path);
        mock_control_close(ctl);
        mock_control_open(ctl, path);
        mock_control_refresh(ctl, node);
        return;
    }
    size_t want = (size_t)(st.st_size - ctl->parsed);
    char *buf = malloc(want + 1);
    if (!buf)
        return;
    ssize_t got = pread(ctl->fd, buf, want, ctl->parsed);
    if (got <= 0) {
        free(buf);
        return;
    }
    buf[got] = '\0';
    char *line = buf;
    for (char *nl = memchr(line, '\n', (size_t)(buf + got - line)); nl;
         nl = memchr(line, '\n', (size_t)(buf + got - line))) {
        *nl = '\0';
        apply_line(ctl, node, ctl->parsed + (line - buf), line);
        line = nl + 1;
    }
    /* a partial last line (a writer mid-append) is read again next time */
    ctl->parsed += line - buf;
    free(buf);
}

/*
 * Take one of the injection whose command line is at `offset`: a counted one
 * is claimed by appending a "<consumed> of=<offset>" line under flock, so the
 * count holds across every process sharing the control file.
 */
static nvmlReturn_t take(mock_control *ctl, mock_node *node, long long offset, const char *consumed)
{
    const mock_injection *injection = find_injection(ctl, offset);
    if (!injection || injection->count == 0)
        return NVML_SUCCESS;
    if (injection->count < 0)
        return injection->code;
    if (injection->consumed >= injection->count)
        return NVML_SUCCESS;
    /* another process may have taken the last one: re-check under the lock */
    if (flock(ctl->fd, LOCK_EX) != 0)
        return NVML_ERROR_UNKNOWN;
    mock_control_refresh(ctl, node);
    nvmlReturn_t rc = NVML_SUCCESS;
    injection = find_injection(ctl, offset); /* gone if cleared or replaced meanwhile */
    if (injection && injection->count > 0 && injection->consumed < injection->count) {
        nvmlReturn_t code = injection->code;
        char line[96];
        int len = snprintf(line, sizeof line, "%s of=%lld pid=%d\n", consumed, offset, (int)getpid());
        if (write(ctl->fd, line, (size_t)len) == len) {
            rc = code;
            mock_control_refresh(ctl, node);
        } else {
            fprintf(stderr, "mock-nvml: %s: cannot append to the control file: %s\n", ctl->path, strerror(errno));
            rc = NVML_ERROR_UNKNOWN;
        }
    }
    flock(ctl->fd, LOCK_UN);
    return rc;
}

nvmlReturn_t mock_control_take_wait_error(mock_control *ctl, mock_node *node)
{
    return take(ctl, node, ctl->wait_error.offset, "wait_error_consumed");
}

long long mock_control_take_wait_hang(mock_control *ctl, mock_node *node, long long *offset)
{
    const long long at = ctl->wait_hang.offset;
    const long long ms = ctl->wait_hang_ms;
    if (take(ctl, node, at, "wait_hang_consumed") != NVML_ERROR_TIMEOUT)
        return 0; /* none, used up, or the claim could not be written (take said so on stderr) */
    *offset = at;
    return ms;
}

/* "nvmlDeviceGetPciInfo" covers itself and "nvmlDeviceGetPciInfo_v<digits>"; a versioned name only itself. */
static int covers(const char *fault_fn, const char *function)
{
    size_t len = strlen(fault_fn);
    if (strncmp(fault_fn, function, len) != 0)
        return 0;
    const char *rest = function + len;
    if (!*rest)
        return 1;
    if (strncmp(rest, "_v", 2) != 0 || !rest[2])
        return 0;
    for (rest += 2; *rest; rest++)
        if (*rest < '0' || *rest > '9')
            return 0;
    return 1;
}

nvmlReturn_t mock_control_take_fault(mock_control *ctl, mock_node *node, const char *function, unsigned gpu)
{
    for (size_t i = 0; i < ctl->fault_count; i++) {
        const mock_fault *fault = &ctl->faults[i];
        if (fault->gpu == gpu && covers(fault->fn, function)) {
            nvmlReturn_t rc = take(ctl, node, fault->injection.offset, "fail_consumed");
            if (rc != NVML_SUCCESS)
                return rc;
        }
    }
    return NVML_SUCCESS;
}
