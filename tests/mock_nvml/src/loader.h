/*
 * Typed accessors for the parsed JSON of a node description or MIG layout,
 * used by node.c and mig.c. Each reports the first problem as
 * "<json path>: <problem>" into the loader's buffer and returns 0; later
 * problems are ignored, so callers can chain them with &&.
 */
#ifndef MOCK_NVML_LOADER_H
#define MOCK_NVML_LOADER_H

#include "json.h"
#include "node.h"

#include <stddef.h>

typedef struct {
    char *err;
    size_t errlen;
    int failed;
} loader;

int bad(loader *ld, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* obj must be an object whose keys are all in the NULL-terminated list `allowed`. */
int check_keys(loader *ld, const json_value *obj, const char *where, const char *const *allowed);
/* The member `key`, or NULL (an error if `required`). */
const json_value *member(loader *ld, const json_value *obj, const char *where, const char *key, int required);
/* The get_* functions leave *out untouched when an optional key is absent. */
int get_string(loader *ld, const json_value *obj, const char *where, const char *key, int required, char *out,
               size_t outlen);
int get_integer(loader *ld, const json_value *obj, const char *where, const char *key, int required, long long min,
                long long max, long long *out);
int get_uint(loader *ld, const json_value *obj, const char *where, const char *key, int required, unsigned *out);
int get_bytes(loader *ld, const json_value *obj, const char *where, const char *key, int required,
              unsigned long long *out);
int get_bool(loader *ld, const json_value *obj, const char *where, const char *key, int *out);
int get_error(loader *ld, const json_value *obj, const char *where, const char *key, nvmlReturn_t *out);
/* "memory": {total, free, used, reserved?} with free + used == total and reserved <= used. */
int get_memory(loader *ld, const json_value *obj, const char *where, mock_memory *mem);

/* The whole file as a NUL-terminated string (malloc'd), or NULL with a reason in err. */
char *read_file(const char *path, char *err, size_t errlen);

#endif
