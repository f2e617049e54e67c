#ifndef TANDEM_CSYSTEMD_SHIM_H
#define TANDEM_CSYSTEMD_SHIM_H
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-id128.h>
#include <systemd/sd-journal.h>
#include <sys/uio.h>
#include <sys/eventfd.h>
#include <sys/xattr.h>
#endif
