package main

import "syscall"

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT from linux/in.h, which the
// syscall package does not define.
const ipBindAddressNoPort = 24

// bindNoPort makes a socket bound to a source address take its port at
// connect time instead of at bind time. A port taken at bind time is
// unique for the source address whatever the destination, so a run over
// many pods ran out of ports near 113,000 connections from 8 sources. A
// port taken at connect time is unique per source and destination pair.
func bindNoPort(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
