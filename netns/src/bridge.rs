//! A bridge in a namespace of its own, with pods (namespaces) plugged into it by veth
//! pairs, each with an address on one /24.

use std::net::Ipv4Addr;

use crate::{Error, Netns};

/// The bridge `br0` in its own namespace, handing out the addresses of a /24 from .2 on.
#[derive(Debug)]
pub struct Bridge {
    switch: Netns,
    subnet: [u8; 3],
    next: u8,
}

impl Bridge {
    /// An empty bridge in a new namespace `name`, for the pods of `subnet`.0/24.
    pub fn new(name: impl Into<String>, subnet: [u8; 3]) -> Result<Bridge, Error> {
        let switch = Netns::add(name)?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        Ok(Bridge {
            switch,
            subnet,
            next: 2,
        })
    }

    /// The bridge's namespace (to watch its traffic, say).
    pub fn switch(&self) -> &Netns {
        &self.switch
    }

    /// Plugs `pod` in as its `eth0` with the next address, and a default route through
    /// it so that connections to service addresses (which no one owns) reach the pod's
    /// capture rules; returns the address.
    pub fn plug(&mut self, pod: &Netns) -> Result<Ipv4Addr, Error> {
        if self.next == 255 {
            return Err(Error::Full);
        }
        let [a, b, c] = self.subnet;
        let ip = Ipv4Addr::new(a, b, c, self.next);
        let veth = format!("v{}", self.next);
        self.next += 1;
        self.switch.ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
        ])?;
        self.switch.ip(&["link", "set", &veth, "master", "br0", "up"])?;
        pod.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        pod.ip(&["link", "set", "eth0", "up"])?;
        pod.ip(&["route", "add", "default", "dev", "eth0"])?;
        Ok(ip)
    }
}
