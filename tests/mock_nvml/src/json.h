/*
 * A small, strict JSON (RFC 8259) parser for the mock NVML's node description.
 *
 * Self-contained on purpose: the mock must build with nothing but gcc and the
 * NVML header. The tree is read-only after parsing; free it with json_free().
 */
#ifndef MOCK_NVML_JSON_H
#define MOCK_NVML_JSON_H

#include <stddef.h>

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json_value {
    json_type type;
    int boolean;
    double number;
    int is_integer;          /* the literal had no fraction/exponent and fits in long long */
    long long integer;
    char *string;            /* JSON_STRING: UTF-8, NUL-terminated */
    size_t count;            /* JSON_ARRAY / JSON_OBJECT: number of items */
    struct json_value **items;
    char **keys;             /* JSON_OBJECT only */
} json_value;

/* Parse text; on error return NULL and write "line L, column C: problem" into err. */
json_value *json_parse(const char *text, char *err, size_t errlen);
void json_free(json_value *value);

/* The member named key of an object, or NULL. */
const json_value *json_get(const json_value *object, const char *key);
const char *json_type_name(json_type type);

#endif
