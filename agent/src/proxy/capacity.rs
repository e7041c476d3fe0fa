//! Capacity check (pure): whether a Service's frontends fit into what the maps have left, decided before any write.
//!
//! The planner asks this for every changed Service before it emits a single op: a Service that does not fit is
//! refused whole (its previous programming, if any, stays exactly as it was), so no Service is ever half-programmed
//! and a write never fails with a full map. Checks are conservative: a resource freed by the same plan (a removed
//! Service's entries, slots and backends) is only counted as free from the next plan on, because the plan deletes
//! after it puts; and a selection table that is swapped needs all its new slots while the old ones still exist.
use std::fmt;

use skiff_common::sizes;

/// Capacities of the service-defining maps (their `max_entries`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub services: u32,
    pub backends: u32,
    pub slots: u32,
    pub rev_nat: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            services: sizes::SERVICES,
            backends: sizes::BACKENDS,
            slots: sizes::SLOTS,
            rev_nat: sizes::REV_NAT,
        }
    }
}

/// One of the limited resources a Service consumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// Entries of the services map (one per frontend).
    Services,
    /// Backend ids (entries of the backends map).
    Backends,
    /// Entries of the selection-table map (slots).
    Slots,
    /// Reverse-NAT ids.
    RevNat,
}

impl Resource {
    pub const ALL: [Resource; 4] = [
        Resource::Services,
        Resource::Backends,
        Resource::Slots,
        Resource::RevNat,
    ];

    /// What the resource is called in messages and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Services => "services",
            Resource::Backends => "backends",
            Resource::Slots => "slots",
            Resource::RevNat => "rev_nat",
        }
    }

    /// The agent flag that sets its size, for messages that say what to do.
    pub fn flag(self) -> &'static str {
        match self {
            Resource::Services => "--services-size",
            Resource::Backends => "--backends-size",
            Resource::Slots => "--slots-size",
            Resource::RevNat => "the rev-NAT map size",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// An amount of each resource (what a Service needs, or what is free).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Amounts([u64; 4]);

impl Amounts {
    pub fn new(services: u64, backends: u64, slots: u64, rev_nat: u64) -> Amounts {
        Amounts([services, backends, slots, rev_nat])
    }

    pub fn get(&self, r: Resource) -> u64 {
        self.0[r.index()]
    }

    pub fn add(&mut self, r: Resource, n: u64) {
        self.0[r.index()] = self.0[r.index()].saturating_add(n);
    }
}

/// What is left in the maps while a plan admits Services one after the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    limits: Limits,
    free: Amounts,
}

/// Why a Service was refused: the first resource it needs more of than is free.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    pub resource: Resource,
    pub needed: u64,
    pub free: u64,
    pub limit: u64,
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "needs {} more {} entries but only {} of {} are free (raise {})",
            self.needed,
            self.resource.name(),
            self.free,
            self.limit,
            self.resource.flag()
        )
    }
}

impl Budget {
    /// The budget of maps with these limits holding `used` entries.
    pub fn new(limits: Limits, used: Amounts) -> Budget {
        let mut free = Amounts::default();
        for r in Resource::ALL {
            free.0[r.index()] = limit_of(&limits, r).saturating_sub(used.get(r));
        }
        Budget { limits, free }
    }

    pub fn free(&self, r: Resource) -> u64 {
        self.free.get(r)
    }

    /// Takes `need` out of the budget if all of it fits; otherwise leaves the budget as it is and says what is
    /// short (resources checked in `Resource::ALL` order).
    pub fn take(&mut self, need: &Amounts) -> Result<(), Shortfall> {
        for r in Resource::ALL {
            if need.get(r) > self.free.get(r) {
                return Err(Shortfall {
                    resource: r,
                    needed: need.get(r),
                    free: self.free.get(r),
                    limit: limit_of(&self.limits, r),
                });
            }
        }
        for r in Resource::ALL {
            self.free.0[r.index()] -= need.get(r);
        }
        Ok(())
    }
}

fn limit_of(l: &Limits, r: Resource) -> u64 {
    u64::from(match r {
        Resource::Services => l.services,
        Resource::Backends => l.backends,
        Resource::Slots => l.slots,
        Resource::RevNat => l.rev_nat,
    })
}

/// A Service the planner refused, with the frontend count it asked for and what was short.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub namespace: String,
    pub name: String,
    /// Endpoints (distinct backends) over the refused frontends.
    pub endpoints: usize,
    pub shortfall: Shortfall,
    /// The Service was programmed before and keeps that programming.
    pub kept_previous: bool,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Service {}/{} with {} endpoints does not fit: it {}; {}",
            self.namespace,
            self.name,
            self.endpoints,
            self.shortfall,
            if self.kept_previous {
                "its previous programming is kept"
            } else {
                "it is not programmed"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            services: 10,
            backends: 100,
            slots: 1000,
            rev_nat: 10,
        }
    }

    #[test]
    fn takes_what_fits_and_refuses_the_rest_without_spending() {
        let mut b = Budget::new(limits(), Amounts::new(2, 90, 0, 2));
        assert_eq!(b.free(Resource::Backends), 10);
        b.take(&Amounts::new(1, 6, 6, 1)).unwrap();
        let err = b.take(&Amounts::new(1, 5, 5, 1)).unwrap_err();
        assert_eq!(
            err,
            Shortfall {
                resource: Resource::Backends,
                needed: 5,
                free: 4,
                limit: 100
            }
        );
        // Nothing of the refused need was spent.
        assert_eq!(b.free(Resource::Services), 7);
        assert_eq!(b.free(Resource::Slots), 994);
        b.take(&Amounts::new(7, 4, 994, 7)).unwrap();
        assert!(b.take(&Amounts::new(1, 0, 0, 0)).is_err());
        assert!(b.take(&Amounts::default()).is_ok());
    }

    #[test]
    fn over_full_maps_have_nothing_free() {
        let b = Budget::new(limits(), Amounts::new(12, 0, 0, 0));
        assert_eq!(b.free(Resource::Services), 0);
    }

    #[test]
    fn messages_carry_the_numbers_and_the_flag() {
        let r = Refusal {
            namespace: "default".into(),
            name: "big".into(),
            endpoints: 300,
            shortfall: Shortfall {
                resource: Resource::Backends,
                needed: 300,
                free: 250,
                limit: 256,
            },
            kept_previous: false,
        };
        let s = r.to_string();
        assert!(s.contains("default/big with 300 endpoints"), "{s}");
        assert!(
            s.contains("needs 300 more backends entries but only 250 of 256 are free"),
            "{s}"
        );
        assert!(
            s.contains("--backends-size") && s.ends_with("not programmed"),
            "{s}"
        );
    }
}
