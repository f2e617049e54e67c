#ifndef TANDEM_CSYSTEMD_SHIM_H
#define TANDEM_CSYSTEMD_SHIM_H
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-id128.h>
#include <sys/eventfd.h>
#endif
