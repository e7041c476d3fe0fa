//! Per-kind strategy: defaulting, validation and allocation applied to objects before they are stored.

pub mod alloc;
pub mod defaults;
pub mod event_conversion;
pub mod kinds;
pub mod meta;
pub mod service;
pub mod validation;

use std::sync::Mutex;

use serde_json::Value;

use alloc::{IpAllocator, Ipv4Cidr, PortAllocator};
use kinds::Kind;
pub use service::Claims;
use validation::FieldError;

/// Registry settings from the command line.
#[derive(Debug, Clone, Copy)]
pub struct RegistryConfig {
    pub service_cidr: Ipv4Cidr,
    pub node_ports: (u16, u16),
    /// Where LoadBalancer Services get their ingress address; without it they stay pending.
    pub lb_pool: Option<Ipv4Cidr>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            service_cidr: "10.96.0.0/16".parse().expect("valid default CIDR"),
            node_ports: (30000, 32767),
            lb_pool: None,
        }
    }
}

struct Allocators {
    ips: IpAllocator,
    ports: PortAllocator,
    lb: Option<IpAllocator>,
}

/// Strategies for every kind plus the allocators they share.
pub struct Registry {
    config: RegistryConfig,
    allocators: Mutex<Allocators>,
}

impl Registry {
    pub fn new(config: RegistryConfig) -> Self {
        let allocators = Allocators {
            ips: IpAllocator::new(config.service_cidr),
            ports: PortAllocator::new(config.node_ports.0, config.node_ports.1),
            lb: config.lb_pool.map(IpAllocator::new),
        };
        Self {
            config,
            allocators: Mutex::new(allocators),
        }
    }

    pub fn config(&self) -> RegistryConfig {
        self.config
    }

    fn allocators(&self) -> std::sync::MutexGuard<'_, Allocators> {
        // A panic while holding the lock cannot leave the sets half-updated in a harmful way.
        self.allocators
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Defaults, validates and allocates a new object. The returned claims must be released if the write fails.
    pub fn admit_create(&self, kind: &Kind, object: &mut Value) -> Result<Claims, Vec<FieldError>> {
        self.admit(kind, None, object)
    }

    /// Defaults, validates and allocates an updated object against the stored one.
    pub fn admit_update(&self, kind: &Kind, old: &Value, new: &mut Value) -> Result<Claims, Vec<FieldError>> {
        self.admit(kind, Some(old), new)
    }

    fn admit(&self, kind: &Kind, old: Option<&Value>, object: &mut Value) -> Result<Claims, Vec<FieldError>> {
        defaults::apply(kind, object);
        let is_service = kind.plural == "services" && kind.group.is_empty();
        if is_service {
            service::default(object);
        }
        let mut errors = validation::validate(kind, object, old);
        if is_service {
            errors.extend(service::validate(object, self.config.node_ports));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if is_service {
            return self.allocate_service(object, old);
        }
        Ok(Claims::default())
    }

    fn allocate_service(&self, svc: &mut Value, old: Option<&Value>) -> Result<Claims, Vec<FieldError>> {
        let mut a = self.allocators();
        let Allocators { ips, ports, lb } = &mut *a;
        let mut claims = service::allocate(svc, old, ips, ports)?;
        if let Some(pool) = lb {
            match service::allocate_lb(svc, old, pool) {
                Ok(lb_ips) => claims.lb_ips = lb_ips,
                Err(errors) => {
                    service::release(&claims, ips, ports);
                    return Err(errors);
                }
            }
        }
        Ok(claims)
    }

    /// Returns claims of a write that did not happen.
    pub fn release(&self, claims: &Claims) {
        let mut a = self.allocators();
        let Allocators { ips, ports, lb } = &mut *a;
        service::release(claims, ips, ports);
        if let Some(pool) = lb {
            for ip in &claims.lb_ips {
                pool.release(*ip);
            }
        }
    }

    /// After a committed update: frees what the old object held and the new one does not.
    pub fn updated(&self, kind: &Kind, old: &Value, new: &Value) {
        if kind.plural == "services" && kind.group.is_empty() {
            self.release(&service::dropped(old, new));
        }
    }

    /// After a committed delete: frees everything the object held.
    pub fn deleted(&self, kind: &Kind, object: &Value) {
        if kind.plural == "services" && kind.group.is_empty() {
            self.release(&service::claims_of(object));
        }
    }

    /// At start: marks what a stored object holds as taken.
    pub fn restore(&self, kind: &Kind, object: &Value) {
        if kind.plural == "services" && kind.group.is_empty() {
            let claims = service::claims_of(object);
            let mut a = self.allocators();
            for ip in &claims.cluster_ips {
                let _ = a.ips.claim(*ip);
            }
            for port in &claims.node_ports {
                let _ = a.ports.claim(*port);
            }
            if let Some(pool) = a.lb.as_mut() {
                for ip in &claims.lb_ips {
                    let _ = pool.claim(*ip);
                }
            }
        }
    }
}
