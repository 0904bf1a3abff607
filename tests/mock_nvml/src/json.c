/* Recursive-descent JSON parser; see json.h. */
#include "json.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 64

typedef struct {
    const char *text;
    const char *p;
    char *err;
    size_t errlen;
    int failed;
} parser;

static void fail(parser *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(parser *ps, const char *fmt, ...)
{
    if (ps->failed)
        return;
    ps->failed = 1;
    int line = 1, col = 1;
    for (const char *c = ps->text; c < ps->p && *c; c++) {
        if (*c == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(ps->err, ps->errlen, "line %d, column %d: %s", line, col, msg);
}

static void skip_ws(parser *ps)
{
    while (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')
        ps->p++;
}

static json_value *new_value(parser *ps, json_type type)
{
    json_value *v = calloc(1, sizeof *v);
    if (!v)
        fail(ps, "out of memory");
    else
        v->type = type;
    return v;
}

static int push(parser *ps, json_value *container, json_value *item, char *key)
{
    json_value **items = realloc(container->items, (container->count + 1) * sizeof *items);
    if (!items) {
        fail(ps, "out of memory");
        return 0;
    }
    container->items = items;
    if (container->type == JSON_OBJECT) {
        char **keys = realloc(container->keys, (container->count + 1) * sizeof *keys);
        if (!keys) {
            fail(ps, "out of memory");
            return 0;
        }
        container->keys = keys;
        keys[container->count] = key;
    }
    items[container->count++] = item;
    return 1;
}

static int hex4(parser *ps, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = ps->p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else {
            fail(ps, "invalid \\u escape");
            return 0;
        }
    }
    ps->p += 4;
    *out = v;
    return 1;
}

static size_t utf8_encode(unsigned cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Parses a string literal starting at the opening quote; returns a malloc'd UTF-8 copy. */
static char *parse_string_raw(parser *ps)
{
    ps->p++; /* opening quote */
    size_t cap = 32, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fail(ps, "out of memory");
        return NULL;
    }
    for (;;) {
        if (len + 5 > cap) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fail(ps, "out of memory");
                return NULL;
            }
            buf = nb;
        }
        unsigned char c = (unsigned char)*ps->p;
        if (c == '"') {
            ps->p++;
            buf[len] = '\0';
            return buf;
        }
        if (c == '\0') {
            fail(ps, "unterminated string");
            break;
        }
        if (c < 0x20) {
            fail(ps, "control character in string");
            break;
        }
        if (c != '\\') {
            buf[len++] = (char)c;
            ps->p++;
            continue;
        }
        ps->p++;
        char e = *ps->p++;
        switch (e) {
        case '"': buf[len++] = '"'; break;
        case '\\': buf[len++] = '\\'; break;
        case '/': buf[len++] = '/'; break;
        case 'b': buf[len++] = '\b'; break;
        case 'f': buf[len++] = '\f'; break;
        case 'n': buf[len++] = '\n'; break;
        case 'r': buf[len++] = '\r'; break;
        case 't': buf[len++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (!hex4(ps, &cp))
                goto error;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (ps->p[0] != '\\' || ps->p[1] != 'u') {
                    fail(ps, "unpaired surrogate in \\u escape");
                    goto error;
                }
                ps->p += 2;
                if (!hex4(ps, &lo))
                    goto error;
                if (lo < 0xDC00 || lo > 0xDFFF) {
                    fail(ps, "invalid low surrogate in \\u escape");
                    goto error;
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                fail(ps, "unpaired surrogate in \\u escape");
                goto error;
            }
            if (cp == 0) {
                fail(ps, "\\u0000 is not allowed");
                goto error;
            }
            len += utf8_encode(cp, buf + len);
            break;
        }
        default:
            ps->p--;
            fail(ps, "invalid escape '\\%c'", e ? e : '0');
            goto error;
        }
    }
error:
    free(buf);
    return NULL;
}

static json_value *parse_value(parser *ps, int depth);

static json_value *parse_number(parser *ps)
{
    const char *start = ps->p;
    const char *q = ps->p;
    int integral = 1;
    if (*q == '-')
        q++;
    if (*q == '0') {
        q++;
    } else if (*q >= '1' && *q <= '9') {
        while (*q >= '0' && *q <= '9')
            q++;
    } else {
        fail(ps, "invalid number");
        return NULL;
    }
    if (*q == '.') {
        integral = 0;
        q++;
        if (!(*q >= '0' && *q <= '9')) {
            ps->p = q;
            fail(ps, "digit expected after '.'");
            return NULL;
        }
        while (*q >= '0' && *q <= '9')
            q++;
    }
    if (*q == 'e' || *q == 'E') {
        integral = 0;
        q++;
        if (*q == '+' || *q == '-')
            q++;
        if (!(*q >= '0' && *q <= '9')) {
            ps->p = q;
            fail(ps, "digit expected in exponent");
            return NULL;
        }
        while (*q >= '0' && *q <= '9')
            q++;
    }
    json_value *v = new_value(ps, JSON_NUMBER);
    if (!v)
        return NULL;
    v->number = strtod(start, NULL);
    if (integral) {
        errno = 0;
        long long i = strtoll(start, NULL, 10);
        if (errno == 0) {
            v->is_integer = 1;
            v->integer = i;
        }
    }
    ps->p = q;
    return v;
}

static int literal(parser *ps, const char *word)
{
    size_t n = strlen(word);
    if (strncmp(ps->p, word, n) != 0)
        return 0;
    ps->p += n;
    return 1;
}

static json_value *parse_container(parser *ps, int depth, int object)
{
    json_value *v = new_value(ps, object ? JSON_OBJECT : JSON_ARRAY);
    if (!v)
        return NULL;
    char close = object ? '}' : ']';
    ps->p++;
    skip_ws(ps);
    if (*ps->p == close) {
        ps->p++;
        return v;
    }
    for (;;) {
        char *key = NULL;
        skip_ws(ps);
        if (object) {
            if (*ps->p != '"') {
                fail(ps, "object key (a string) expected");
                break;
            }
            key = parse_string_raw(ps);
            if (!key)
                break;
            skip_ws(ps);
            if (*ps->p != ':') {
                free(key);
                fail(ps, "':' expected after object key");
                break;
            }
            ps->p++;
        }
        json_value *item = parse_value(ps, depth + 1);
        if (!item || !push(ps, v, item, key)) {
            free(key);
            json_free(item);
            break;
        }
        skip_ws(ps);
        if (*ps->p == ',') {
            ps->p++;
            continue;
        }
        if (*ps->p == close) {
            ps->p++;
            return v;
        }
        fail(ps, object ? "',' or '}' expected" : "',' or ']' expected");
        break;
    }
    json_free(v);
    return NULL;
}

static json_value *parse_value(parser *ps, int depth)
{
    if (depth > JSON_MAX_DEPTH) {
        fail(ps, "nesting deeper than %d levels", JSON_MAX_DEPTH);
        return NULL;
    }
    skip_ws(ps);
    char c = *ps->p;
    if (c == '{' || c == '[')
        return parse_container(ps, depth, c == '{');
    if (c == '"') {
        char *s = parse_string_raw(ps);
        if (!s)
            return NULL;
        json_value *v = new_value(ps, JSON_STRING);
        if (!v) {
            free(s);
            return NULL;
        }
        v->string = s;
        return v;
    }
    if (c == '-' || (c >= '0' && c <= '9'))
        return parse_number(ps);
    int truth = literal(ps, "true");
    if (truth || literal(ps, "false")) {
        json_value *v = new_value(ps, JSON_BOOL);
        if (v)
            v->boolean = truth;
        return v;
    }
    if (literal(ps, "null"))
        return new_value(ps, JSON_NULL);
    if (c == '\0')
        fail(ps, "unexpected end of input");
    else
        fail(ps, "unexpected character '%c'", c);
    return NULL;
}

json_value *json_parse(const char *text, char *err, size_t errlen)
{
    parser ps = {.text = text, .p = text, .err = err, .errlen = errlen, .failed = 0};
    json_value *v = parse_value(&ps, 0);
    if (!v)
        return NULL;
    skip_ws(&ps);
    if (*ps.p != '\0') {
        fail(&ps, "trailing characters after the JSON value");
        json_free(v);
        return NULL;
    }
    return v;
}

void json_free(json_value *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->count; i++) {
        json_free(v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->string);
    free(v);
}

const json_value *json_get(const json_value *object, const char *key)
{
    if (!object || object->type != JSON_OBJECT)
        return NULL;
    for (size_t i = 0; i < object->count; i++)
        if (strcmp(object->keys[i], key) == 0)
            return object->items[i];
    return NULL;
}

const char *json_type_name(json_type type)
{
    switch (type) {
    case JSON_NULL: return "null";
    case JSON_BOOL: return "a boolean";
    case JSON_NUMBER: return "a number";
    case JSON_STRING: return "a string";
    case JSON_ARRAY: return "an array";
    case JSON_OBJECT: return "an object";
    }
    return "?";
}
