/* SPDX-License-Identifier: MIT */
#include "gateway/h2.h"

#include "gateway/conn.h"
#include "gateway/exchange.h"

void gw_h2_start(struct gw_conn *c)
{
    gw_conn_close(c);
}

void gw_h2_on_read(struct gw_conn *c)
{
    (void)c;
}

void gw_h2_on_drain(struct gw_conn *c)
{
    (void)c;
}

void gw_h2_on_deadline(struct gw_conn *c)
{
    gw_conn_close(c);
}

void gw_h2_on_gone(struct gw_conn *c)
{
    (void)c;
}

void gw_h2_free(struct gw_conn *c)
{
    (void)c;
}

void gw_h2_drain(struct gw_conn *c)
{
    gw_conn_close(c);
}
