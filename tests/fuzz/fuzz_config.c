/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the configuration loader: arbitrary bytes as a YAML file, and as a size
 * and a duration. Every refusal must free what it built (LSan) and write a terminated message. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "config/config.h"
#include "gateway/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct gw_config *c = NULL;
    char err[256], text[64];
    uint64_t v;

    if (gw_config_load_buffer("fuzz.yaml", (const char *)data, size, &c, err, sizeof err) == 0) {
        /* A loaded snapshot must be consistent: every route names one of its upstreams. */
        for (size_t i = 0; i < c->nroutes; i++)
            if (c->routes[i].upstream < c->upstreams ||
                c->routes[i].upstream >= c->upstreams + c->nupstreams)
                __builtin_trap();
        gw_config_unref(gw_config_ref(c));
        gw_config_unref(c);
    } else if (c != NULL || memchr(err, '\0', sizeof err) == NULL) {
        __builtin_trap();
    }

    if (size < sizeof text) {
        memcpy(text, data, size);
        text[size] = '\0';
        gw_parse_size(text, &v);
        gw_parse_duration(text, &v);
    }
    return 0;
}
