/* Typed JSON accessors with JSON-path error messages, shared by the node and MIG loaders. */
#include "loader.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int bad(loader *ld, const char *fmt, ...)
{
    if (!ld->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ld->err, ld->errlen, fmt, ap);
        va_end(ap);
        ld->failed = 1;
    }
    return 0;
}

int check_keys(loader *ld, const json_value *obj, const char *where, const char *const *allowed)
{
    if (!obj || obj->type != JSON_OBJECT)
        return bad(ld, "%s: expected an object, got %s", where, obj ? json_type_name(obj->type) : "nothing");
    for (size_t i = 0; i < obj->count; i++) {
        int known = 0;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(*a, obj->keys[i]) == 0)
                known = 1;
        if (!known) {
            char list[512] = "";
            for (const char *const *a = allowed; *a; a++) {
                strncat(list, *a, sizeof list - strlen(list) - 1);
                if (a[1])
                    strncat(list, ", ", sizeof list - strlen(list) - 1);
            }
            return bad(ld, "%s: unknown key \"%s\" (allowed: %s)", where, obj->keys[i], list);
        }
    }
    return 1;
}

const json_value *member(loader *ld, const json_value *obj, const char *where, const char *key, int required)
{
    const json_value *v = json_get(obj, key);
    if (!v && required)
        bad(ld, "%s: missing required key \"%s\"", where, key);
    return v;
}

int get_string(loader *ld, const json_value *obj, const char *where, const char *key, int required,
                      char *out, size_t outlen)
{
    const json_value *v = member(ld, obj, where, key, required);
    if (!v)
        return !ld->failed;
    if (v->type != JSON_STRING)
        return bad(ld, "%s.%s: expected a string, got %s", where, key, json_type_name(v->type));
    if (strlen(v->string) + 1 > outlen)
        return bad(ld, "%s.%s: \"%s\" is longer than %zu characters", where, key, v->string, outlen - 1);
    if (!*v->string)
        return bad(ld, "%s.%s: must not be empty", where, key);
    strcpy(out, v->string);
    return 1;
}

int get_integer(loader *ld, const json_value *obj, const char *where, const char *key, int required,
                       long long min, long long max, long long *out)
{
    const json_value *v = member(ld, obj, where, key, required);
    if (!v)
        return !ld->failed;
    if (v->type != JSON_NUMBER || !v->is_integer)
        return bad(ld, "%s.%s: expected an integer, got %s", where, key,
                   v->type == JSON_NUMBER ? "a non-integer number" : json_type_name(v->type));
    if (v->integer < min || v->integer > max)
        return bad(ld, "%s.%s: %lld is out of range [%lld, %lld]", where, key, v->integer, min, max);
    *out = v->integer;
    return 1;
}

int get_uint(loader *ld, const json_value *obj, const char *where, const char *key, int required,
                    unsigned *out)
{
    long long v;
    if (!get_integer(ld, obj, where, key, required, 0, 0xFFFFFFFFLL, &v))
        return 0;
    if (json_get(obj, key))
        *out = (unsigned)v;
    return 1;
}

int get_bytes(loader *ld, const json_value *obj, const char *where, const char *key, int required,
                     unsigned long long *out)
{
    long long v;
    if (!get_integer(ld, obj, where, key, required, 0, 0x7FFFFFFFFFFFFFFFLL, &v))
        return 0;
    if (json_get(obj, key))
        *out = (unsigned long long)v;
    return 1;
}

int get_bool(loader *ld, const json_value *obj, const char *where, const char *key, int *out)
{
    const json_value *v = json_get(obj, key);
    if (!v)
        return 1;
    if (v->type != JSON_BOOL)
        return bad(ld, "%s.%s: expected true or false, got %s", where, key, json_type_name(v->type));
    *out = v->boolean;
    return 1;
}

int get_error(loader *ld, const json_value *obj, const char *where, const char *key, nvmlReturn_t *out)
{
    const json_value *v = json_get(obj, key);
    *out = NVML_SUCCESS;
    if (!v || v->type == JSON_NULL)
        return 1;
    if (v->type != JSON_STRING || !mock_error_from_name(v->string, out) || *out == NVML_SUCCESS)
        return bad(ld, "%s.%s: expected an NVML error name such as \"NVML_ERROR_DRIVER_NOT_LOADED\", got %s%s%s",
                   where, key, v->type == JSON_STRING ? "\"" : "",
                   v->type == JSON_STRING ? v->string : json_type_name(v->type), v->type == JSON_STRING ? "\"" : "");
    return 1;
}

int get_memory(loader *ld, const json_value *obj, const char *where, mock_memory *mem)
{
    static const char *const keys[] = {"total", "free", "used", "reserved", NULL};
    char w[128];
    snprintf(w, sizeof w, "%s.memory", where);
    const json_value *m = member(ld, obj, where, "memory", 1);
    if (!m || !check_keys(ld, m, w, keys))
        return 0;
    mem->reserved = 0;
    if (!get_bytes(ld, m, w, "total", 1, &mem->total) || !get_bytes(ld, m, w, "free", 1, &mem->free) ||
        !get_bytes(ld, m, w, "used", 1, &mem->used) || !get_bytes(ld, m, w, "reserved", 0, &mem->reserved))
        return 0;
    if (mem->total == 0)
        return bad(ld, "%s.total: must be positive", w);
    if (mem->free + mem->used != mem->total)
        return bad(ld, "%s: free (%llu) + used (%llu) must equal total (%llu); used includes reserved", w, mem->free,
                   mem->used, mem->total);
    if (mem->reserved > mem->used)
        return bad(ld, "%s: reserved (%llu) must not exceed used (%llu)", w, mem->reserved, mem->used);
    return 1;
}

char *read_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open: %s", strerror(errno));
        return NULL;
    }
    size_t cap = 8192, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (len < cap - 1)
            break;
        cap *= 2;
        char *nb = realloc(buf, cap);
        if (!nb)
            free(buf);
        buf = nb;
    }
    int failed = ferror(f);
    fclose(f);
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (failed) {
        free(buf);
        snprintf(err, errlen, "read error");
        return NULL;
    }
    buf[len] = '\0';
    if (strlen(buf) != len) {
        free(buf);
        snprintf(err, errlen, "file contains a NUL byte");
        return NULL;
    }
    return buf;
}
