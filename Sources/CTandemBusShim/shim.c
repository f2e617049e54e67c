#include <stdlib.h>
#include "tandem_bus_shim.h"

static tandem_method_cb method_callback;
static tandem_property_cb get_callback;
static tandem_property_set_cb set_callback;

void tandem_bus_shim_set_callbacks(tandem_method_cb method, tandem_property_cb get, tandem_property_set_cb set) {
        method_callback = method;
        get_callback = get;
        set_callback = set;
}

static int method_trampoline(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        return method_callback(m, userdata, ret_error);
}

static int get_trampoline(sd_bus *bus, const char *path, const char *interface, const char *property,
                          sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        return get_callback(bus, path, interface, property, reply, userdata, ret_error);
}

static int set_trampoline(sd_bus *bus, const char *path, const char *interface, const char *property,
                          sd_bus_message *value, void *userdata, sd_bus_error *ret_error) {
        return set_callback(bus, path, interface, property, value, userdata, ret_error);
}

sd_bus_vtable *tandem_vtable_new(size_t members) {
        sd_bus_vtable *v = calloc(members + 2, sizeof(sd_bus_vtable));
        if (!v)
                return NULL;
        v[0] = (sd_bus_vtable) SD_BUS_VTABLE_START(0);
        v[members + 1] = (sd_bus_vtable) SD_BUS_VTABLE_END;
        return v;
}

void tandem_vtable_method(sd_bus_vtable *v, size_t i, const char *member, const char *signature,
                          const char *result, const char *names) {
        v[i + 1] = (sd_bus_vtable) {
                .type = _SD_BUS_VTABLE_METHOD,
                .flags = SD_BUS_VTABLE_UNPRIVILEGED,
                .x.method = { .member = member, .signature = signature, .result = result,
                              .handler = method_trampoline, .offset = 0, .names = names },
        };
}

void tandem_vtable_property(sd_bus_vtable *v, size_t i, const char *member, const char *signature, int change) {
        if (change == 2) {
                v[i + 1] = (sd_bus_vtable) SD_BUS_WRITABLE_PROPERTY(member, signature, get_trampoline,
                                                                    set_trampoline, 0, 0);
                return;
        }
        v[i + 1] = (sd_bus_vtable) SD_BUS_PROPERTY(member, signature, get_trampoline, 0,
                                                   change == 0 ? SD_BUS_VTABLE_PROPERTY_CONST
                                                   : change == 1 ? SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE : 0);
}

void tandem_vtable_signal(sd_bus_vtable *v, size_t i, const char *member, const char *signature, const char *names) {
        v[i + 1] = (sd_bus_vtable) SD_BUS_SIGNAL_WITH_NAMES(member, signature, names, 0);
}
