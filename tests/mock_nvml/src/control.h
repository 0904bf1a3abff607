/*
 * The runtime control file (MOCK_NVML_CONTROL): an append-only text file that
 * tests write through tests/mock_nvml/control.py to inject XID/ECC events,
 * lose GPUs and make nvmlEventSetWait fail, in every process using the mock.
 *
 * One command per line, "<command> key=value ...":
 *   xid gpu=<ref> xid=<n> [gi=<n> ci=<n>]
 *   ecc gpu=<ref> bits=single|double
 *   lose gpu=<ref>
 *   wait_error code=<NVML_ERROR_NAME> count=<n|-1>
 *   wait_error_consumed of=<offset of the wait_error line> pid=<pid>   (written by the mock)
 *   clear
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

typedef struct {
    char path[4096]; /* empty: no control file */
    int fd;          /* -1 until the file exists */
    long long parsed; /* bytes of complete lines consumed so far */
    mock_event *events;
    size_t event_count;
    size_t event_cap;
    unsigned char lost[MOCK_MAX_GPUS];
    long long wait_error_offset; /* -1: none active */
    nvmlReturn_t wait_error_code;
    long long wait_error_count; /* -1: forever */
    long long wait_error_consumed;
} mock_control;

void mock_control_open(mock_control *ctl, const char *path);
void mock_control_close(mock_control *ctl);

/* Read commands appended since the last call (cheap when the file has not grown). */
void mock_control_refresh(mock_control *ctl, const mock_node *node);

/*
 * If an injected wait error is active, take one (counted across processes
 * under flock) and return its code; otherwise NVML_SUCCESS.
 */
nvmlReturn_t mock_control_take_wait_error(mock_control *ctl, const mock_node *node);

#endif
