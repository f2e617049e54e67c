#include "tandem_bus_shim.h"

static tandem_method_cb method_callback;
static tandem_property_cb property_callback;

void tandem_bus_shim_set_callbacks(tandem_method_cb method, tandem_property_cb property) {
        method_callback = method;
        property_callback = property;
}

static tandem_property_set_cb property_set_callback;

void tandem_bus_shim_set_setter(tandem_property_set_cb setter) {
        property_set_callback = setter;
}

static int property_set_trampoline(sd_bus *bus, const char *path, const char *interface,
                                   const char *property, sd_bus_message *value,
                                   void *userdata, sd_bus_error *ret_error) {
        return property_set_callback(bus, path, interface, property, value, userdata, ret_error);
}

static int method_trampoline(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        return method_callback(m, userdata, ret_error);
}

static int property_trampoline(sd_bus *bus, const char *path, const char *interface,
                               const char *property, sd_bus_message *reply,
                               void *userdata, sd_bus_error *ret_error) {
        return property_callback(bus, path, interface, property, reply, userdata, ret_error);
}

#define CONST_PROP(name, sig) \
        SD_BUS_PROPERTY(name, sig, property_trampoline, 0, SD_BUS_VTABLE_PROPERTY_CONST)
#define LIVE_PROP(name, sig) \
        SD_BUS_PROPERTY(name, sig, property_trampoline, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE)
/* Authorization is decided in Swift from the caller's credentials, so every method is
 * marked unprivileged (otherwise sd-bus would demand CAP_SYS_ADMIN on its own). */
#define METHOD(name, sig, in, result, out) \
        SD_BUS_METHOD_WITH_NAMES(name, sig, in, result, out, method_trampoline, SD_BUS_VTABLE_UNPRIVILEGED)

static const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        CONST_PROP("Version", "s"),
        LIVE_PROP("ServerId", "s"),
        LIVE_PROP("Role", "s"),
        LIVE_PROP("PairStatus", "s"),
        CONST_PROP("ServiceAccount", "s"),
        LIVE_PROP("Epoch", "t"),
        LIVE_PROP("LicenseCount", "u"),
        LIVE_PROP("SeatsTotal", "u"),
        LIVE_PROP("SeatsInUse", "u"),
        CONST_PROP("ListenAddresses", "as"),
        LIVE_PROP("Serving", "b"),
        LIVE_PROP("PeerAddress", "s"),
        LIVE_PROP("PeerServerId", "s"),
        LIVE_PROP("PeerStatus", "s"),
        LIVE_PROP("ReplicatedSeq", "t"),
        LIVE_PROP("WitnessAddress", "s"),
        LIVE_PROP("WitnessStatus", "s"),
        LIVE_PROP("RejectedFrames", "a{st}"),
        CONST_PROP("PartitionPolicy", "s"),
        METHOD("GetActivationRequest", "", "", "s", SD_BUS_PARAM(request)),
        METHOD("ActivateLicense", "s", SD_BUS_PARAM(license),
               "so", SD_BUS_PARAM(license_id) SD_BUS_PARAM(path)),
        METHOD("DeactivateLicense", "s", SD_BUS_PARAM(license_id), "", ""),
        METHOD("ListLicenses", "", "", "a(sssuuut)", SD_BUS_PARAM(licenses)),
        METHOD("Acquire", "susa{sv}",
               SD_BUS_PARAM(feature) SD_BUS_PARAM(count) SD_BUS_PARAM(client) SD_BUS_PARAM(options),
               "st", SD_BUS_PARAM(lease_id) SD_BUS_PARAM(expires_usec)),
        METHOD("Renew", "s", SD_BUS_PARAM(lease_id), "t", SD_BUS_PARAM(expires_usec)),
        METHOD("Release", "s", SD_BUS_PARAM(lease_id), "", ""),
        METHOD("ListLeases", "", "", "a(sssutt)", SD_BUS_PARAM(leases)),
        METHOD("Reserve", "sus",
               SD_BUS_PARAM(feature) SD_BUS_PARAM(count) SD_BUS_PARAM(holder),
               "s", SD_BUS_PARAM(reservation_id)),
        METHOD("Unreserve", "s", SD_BUS_PARAM(reservation_id), "", ""),
        METHOD("ListReservations", "", "", "a(sssu)", SD_BUS_PARAM(reservations)),
        METHOD("GetUsage", "", "", "a(suuuut)", SD_BUS_PARAM(usage)),
        METHOD("ResetServerId", "", "", "s", SD_BUS_PARAM(server_id)),
        METHOD("PrepareBackup", "s", SD_BUS_PARAM(primary_address), "", ""),
        METHOD("EnableBackup", "s", SD_BUS_PARAM(backup_address), "", ""),
        METHOD("DisableBackup", "", "", "", ""),
        METHOD("GetPeerStatus", "", "", "a{sv}", SD_BUS_PARAM(status)),
        METHOD("Sync", "", "", "", ""),
        SD_BUS_SIGNAL_WITH_NAMES("LicenseActivated", "so",
                                 SD_BUS_PARAM(license_id) SD_BUS_PARAM(path), 0),
        SD_BUS_SIGNAL_WITH_NAMES("LicenseDeactivated", "so",
                                 SD_BUS_PARAM(license_id) SD_BUS_PARAM(path), 0),
        SD_BUS_SIGNAL_WITH_NAMES("LeaseExpired", "s", SD_BUS_PARAM(lease_id), 0),
        SD_BUS_VTABLE_END
};

static const sd_bus_vtable license_vtable[] = {
        SD_BUS_VTABLE_START(0),
        CONST_PROP("Id", "s"),
        CONST_PROP("Product", "s"),
        CONST_PROP("Feature", "s"),
        CONST_PROP("Seats", "u"),
        CONST_PROP("NotAfterUSec", "t"),
        CONST_PROP("IssuedTo", "as"),
        CONST_PROP("ActivatedUSec", "t"),
        CONST_PROP("KeyId", "s"),
        LIVE_PROP("InUse", "u"),
        LIVE_PROP("Reserved", "u"),
        SD_BUS_VTABLE_END
};

static const sd_bus_vtable log_control_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_WRITABLE_PROPERTY("LogLevel", "s", property_trampoline, property_set_trampoline, 0, 0),
        SD_BUS_WRITABLE_PROPERTY("LogTarget", "s", property_trampoline, property_set_trampoline, 0, 0),
        SD_BUS_PROPERTY("SyslogIdentifier", "s", property_trampoline, 0, 0),
        SD_BUS_VTABLE_END
};

const sd_bus_vtable *tandem_manager_vtable(void) { return manager_vtable; }
const sd_bus_vtable *tandem_log_control_vtable(void) { return log_control_vtable; }
const sd_bus_vtable *tandem_license_vtable(void) { return license_vtable; }
