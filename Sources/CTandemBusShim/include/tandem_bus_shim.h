#ifndef TANDEM_BUS_SHIM_H
#define TANDEM_BUS_SHIM_H
/*
 * The sd_bus_vtable arrays of Tandem's D-Bus objects. The SD_BUS_* vtable macros
 * cannot be imported into Swift, so the tables live here and every entry points at
 * one of two trampolines that forward to callbacks registered from Swift.
 */
#include <systemd/sd-bus.h>

typedef int (*tandem_method_cb)(sd_bus_message *m, void *userdata, sd_bus_error *ret_error);
typedef int (*tandem_property_cb)(sd_bus *bus, const char *path, const char *interface,
                                  const char *property, sd_bus_message *reply,
                                  void *userdata, sd_bus_error *ret_error);

typedef int (*tandem_property_set_cb)(sd_bus *bus, const char *path, const char *interface,
                                      const char *property, sd_bus_message *value,
                                      void *userdata, sd_bus_error *ret_error);

/* Register the Swift callbacks; call once before adding any vtable. */
void tandem_bus_shim_set_callbacks(tandem_method_cb method, tandem_property_cb property);
void tandem_bus_shim_set_setter(tandem_property_set_cb setter);

/* org.freedesktop.LogControl1 on /org/freedesktop/LogControl1 (LogLevel, LogTarget writable
 * by privileged callers only: sd-bus checks it, as for systemd's own services). */
const sd_bus_vtable *tandem_log_control_vtable(void);

/* org.tandem.LicenseManager1.Manager on /org/tandem/LicenseManager1 */
const sd_bus_vtable *tandem_manager_vtable(void);
/* org.tandem.LicenseManager1.License on /org/tandem/LicenseManager1/license/<id> */
const sd_bus_vtable *tandem_license_vtable(void);

#endif
