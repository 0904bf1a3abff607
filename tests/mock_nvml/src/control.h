/*
 * The runtime control file (MOCK_NVML_CONTROL): an append-only text file that
 * tests write through tests/mock_nvml/control.py to inject XID/ECC events,
 * lose GPUs, change a GPU's MIG layout, make single per-GPU calls fail and
 * make nvmlEventSetWait fail or hang, in every process using the mock.
 *
 * One command per line, "<command> key=value ...":
 *   xid gpu=<ref> xid=<n> [gi=<n> ci=<n>]
 *   ecc gpu=<ref> bits=single|double
 *   lose gpu=<ref>
 *   mig gpu=<ref> mode=0|1 [pending=0|1] [layout=<JSON file: the new "mig_devices" array>]
 *   fail fn=<nvmlDevice... function> gpu=<ref> code=<NVML_ERROR_NAME> [count=<n|-1>]
 *   wait_error code=<NVML_ERROR_NAME> count=<n|-1>
 *   wait_hang ms=<n> [count=<n|-1>]                                     (count defaults to 1)
 *   wait_error_consumed of=<offset of the wait_error line> pid=<pid>   (written by the mock)
 *   fail_consumed of=<offset of the fail line> pid=<pid>               (written by the mock)
 *   wait_hang_consumed of=<offset of the wait_hang line> pid=<pid>     (written by the mock)
 *   clear
 * fn= names an exported per-GPU function (nvmlDevice*, nvmlGpuInstance*,
 * nvmlComputeInstance*); a name without a "_v<n>" suffix
 * also covers its versioned variants (nvmlDeviceGetPciInfo covers _v2, _v3).
 * <ref> is an NVML index, a "GPU-..." UUID or a "MIG-..." UUID (which means its
 * parent GPU, with the MIG device's GPU/compute instance ids unless given).
 * Lines starting with '#' are comments.
 */
#ifndef MOCK_NVML_CONTROL_H
#define MOCK_NVML_CONTROL_H

#include "node.h"

#include <stddef.h>

typedef struct {
    long long offset; /* byte offset of the command's line: events newer than a set's cursor are delivered */
    unsigned gpu;
    unsigned long long type;
    unsigned long long data;
    unsigned gpu_instance_id;
    unsigned compute_instance_id;
} mock_event;

#define MOCK_MAX_FAULTS 64
#define MOCK_FN_LEN 64

/* An injected error that fails the next `count` matching calls, counted across processes. */
typedef struct {
    long long offset; /* byte offset of the command's line, named by its *_consumed lines; -1: none */
    nvmlReturn_t code;
    long long count; /* -1: forever */
    long long consumed;
} mock_injection;

/* A `fail` command: calls of one function (family) on one GPU return an error. */
typedef struct {
    mock_injection injection;
    char fn[MOCK_FN_LEN];
    unsigned gpu;
} mock_fault;

typedef struct {
    char path[4096]; /* empty: no control file */
    int fd;          /* -1 until the file exists */
    long long parsed; /* bytes of complete lines consumed so far */
    mock_event *events;
    size_t event_count;
    size_t event_cap;
    unsigned char lost[MOCK_MAX_GPUS];
    mock_injection wait_error;
    mock_injection wait_hang; /* its code is unused */
    long long wait_hang_ms;
    mock_fault faults[MOCK_MAX_FAULTS]; /* at most one per (function, GPU): a newer command replaces it */
    size_t fault_count;
} mock_control;

void mock_control_open(mock_control *ctl, const char *path);
void mock_control_close(mock_control *ctl);

/* Read commands appended since the last call (cheap when the file has not grown). */
void mock_control_refresh(mock_control *ctl, mock_node *node);

/*
 * If an injected wait error is active, take one (counted across processes
 * under flock) and return its code; otherwise NVML_SUCCESS.
 */
nvmlReturn_t mock_control_take_wait_error(mock_control *ctl, mock_node *node);

/*
 * If an injected wait hang is active, take one (counted like wait errors) and
 * return its length in ms, storing the offset of its command line in
 * *offset; 0 when no hang applies. The hang ends early once that command is
 * no longer ctl->wait_hang (a `clear` or a newer `wait_hang` line).
 */
long long mock_control_take_wait_hang(mock_control *ctl, mock_node *node, long long *offset);

/*
 * If a `fail` command covers this call of `function` on GPU `gpu`, take one
 * (counted like wait errors) and return its code; otherwise NVML_SUCCESS.
 */
nvmlReturn_t mock_control_take_fault(mock_control *ctl, mock_node *node, const char *function, unsigned gpu);

#endif
