/*
 * An ipmi_sim plugin (loaded with `loadlib`) that lets tests see what a BMC was asked to do.
 *
 * ipmi_sim answers Chassis Control "pulse diagnostic interrupt" (data byte 0x04) with 0xCC.
 * This module takes over Chassis Control (netfn 0x00, cmd 0x02): the diagnostic interrupt
 * is recorded as `<CLOCK_REALTIME ns> nmi` in the file named by the init string
 * (`log=PATH`) and answered 0x00; every other Chassis Control request is recorded as
 * `<ns> chassis <byte>` and handed to the simulator's own handler (so the lan.conf
 * `chassis_control` script still runs and answers).
 *
 * With `power=module` in the init string the module also keeps the power state itself
 * (ipmi_mc_set_chassis_control_func), recording `<ns> set power N` / `<ns> set reset N`,
 * so Get Chassis Status is answered without starting the script: benchmarks use this to
 * keep the simulator's own cost out of the figures.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <OpenIPMI/serv.h>
#include <OpenIPMI/mcserv.h>

/* The simulator's table of chassis commands (exported by ipmi_sim). */
extern cmd_handler_f chassis_netfn_handlers[];

static cmd_handler_f builtin_chassis_control;
static char log_path[4096];
static int module_power;
static unsigned char power_on = 1;

static void record(const char *what, int arg)
{
    struct timespec ts;
    FILE *f;

    clock_gettime(CLOCK_REALTIME, &ts);
    f = fopen(log_path, "a");
    if (!f)
        return;
    if (arg < 0)
        fprintf(f, "%lld%09ld %s\n", (long long) ts.tv_sec, ts.tv_nsec, what);
    else
        fprintf(f, "%lld%09ld %s 0x%02x\n", (long long) ts.tv_sec, ts.tv_nsec, what, arg);
    fclose(f);
}

static void chassis_control(lmc_data_t *mc, msg_t *msg, unsigned char *rdata,
                            unsigned int *rdata_len, void *cb_data)
{
    if (msg->len >= 1 && (msg->data[0] & 0x0f) == 0x04) {
        record("nmi", -1);
        rdata[0] = 0x00;
        *rdata_len = 1;
        return;
    }
    if (msg->len >= 1)
        record("chassis", msg->data[0]);
    if (builtin_chassis_control) {
        builtin_chassis_control(mc, msg, rdata, rdata_len, cb_data);
    } else {
        rdata[0] = 0xc1; /* invalid command */
        *rdata_len = 1;
    }
}

static int set_chassis(lmc_data_t *mc, int op, unsigned char *val, void *cb_data)
{
    unsigned char v = val ? *val : 0;

    if (op == CHASSIS_CONTROL_POWER) {
        power_on = v != 0;
        record("set power", v);
    } else if (op == CHASSIS_CONTROL_RESET) {
        record("set reset", v);
    }
    return 0;
}

static int get_chassis(lmc_data_t *mc, int op, unsigned char *val, void *cb_data)
{
    *val = op == CHASSIS_CONTROL_POWER ? power_on : 0;
    return 0;
}

int ipmi_sim_module_print_version(sys_data_t *sys, char *initstr)
{
    printf("haconn test NMI module\n");
    return 0;
}

int ipmi_sim_module_init(sys_data_t *sys, const char *initstr)
{
    const char *p = initstr ? strstr(initstr, "log=") : NULL;
    size_t n;

    if (!p) {
        sys->log(sys, SETUP_ERROR, NULL, "nmi module: no log=PATH in the init string");
        return EINVAL;
    }
    p += 4;
    n = strcspn(p, " \t");
    if (n == 0 || n >= sizeof(log_path)) {
        sys->log(sys, SETUP_ERROR, NULL, "nmi module: bad log path");
        return EINVAL;
    }
    memcpy(log_path, p, n);
    log_path[n] = '\0';
    module_power = strstr(initstr, "power=module") != NULL;
    builtin_chassis_control = chassis_netfn_handlers[0x02];
    return ipmi_emu_register_cmd_handler(0x00, 0x02, chassis_control, NULL);
}

int ipmi_sim_module_post_init(sys_data_t *sys)
{
    lmc_data_t *bmc = sys->ipmb_addrs[0x20];

    if (!module_power)
        return 0;
    if (!bmc) {
        sys->log(sys, SETUP_ERROR, NULL, "nmi module: no BMC at 0x20");
        return EINVAL;
    }
    ipmi_mc_set_chassis_control_func(bmc, set_chassis, get_chassis, NULL);
    return 0;
}
