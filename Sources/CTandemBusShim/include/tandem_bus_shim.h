#ifndef TANDEM_BUS_SHIM_H
#define TANDEM_BUS_SHIM_H
/*
 * Builds sd_bus_vtable arrays at run time. The SD_BUS_* vtable macros cannot be imported into
 * Swift, so the entries are filled in here, from member lists defined in Swift, and every entry
 * points at one of three trampolines that forward to callbacks registered from Swift.
 */
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

typedef int (*tandem_method_cb)(sd_bus_message *m, void *userdata, sd_bus_error *ret_error);
typedef int (*tandem_property_cb)(sd_bus *bus, const char *path, const char *interface,
                                  const char *property, sd_bus_message *reply,
                                  void *userdata, sd_bus_error *ret_error);
typedef int (*tandem_property_set_cb)(sd_bus *bus, const char *path, const char *interface,
                                      const char *property, sd_bus_message *value,
                                      void *userdata, sd_bus_error *ret_error);

/* Register the Swift callbacks; call before adding any vtable. */
void tandem_bus_shim_set_callbacks(tandem_method_cb method, tandem_property_cb get, tandem_property_set_cb set);

/* A vtable with room for `members` entries between its start and end (free() it after the
 * object's slot is gone). */
sd_bus_vtable *tandem_vtable_new(size_t members);
/* Entry `i` (0-based, after the start). `names` holds the argument names, in then out, each
 * NUL-terminated. Methods are marked unprivileged: authorization is decided in Swift from the
 * caller's credentials (otherwise sd-bus would demand CAP_SYS_ADMIN on its own). */
void tandem_vtable_method(sd_bus_vtable *v, size_t i, const char *member, const char *signature,
                          const char *result, const char *names);
/* `change`: 0 constant, 1 emits PropertiesChanged, 2 writable by privileged callers, 3 read
 * fresh on every Get and never announced. */
void tandem_vtable_property(sd_bus_vtable *v, size_t i, const char *member, const char *signature, int change);
void tandem_vtable_signal(sd_bus_vtable *v, size_t i, const char *member, const char *signature, const char *names);

#endif
