//! Envoy's response flags: short codes saying why a request ended as it did, shown
//! in access logs and in the `response_flags` label of Istio's metrics.

/// A set of response flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(u32);

macro_rules! flags {
    ($($name:ident = $bit:expr, $code:literal, $doc:literal;)*) => {
        impl Flags {
            $(
                #[doc = $doc]
                pub const $name: Flags = Flags(1 << $bit);
            )*

            /// Envoy's codes in Envoy's order.
            const CODES: &'static [(Flags, &'static str)] = &[$((Flags::$name, $code)),*];
        }
    };
}

flags! {
    NO_HEALTHY_UPSTREAM = 0, "UH", "No healthy upstream endpoint.";
    UPSTREAM_CONNECTION_FAILURE = 1, "UF", "The upstream connection failed.";
    UPSTREAM_OVERFLOW = 2, "UO", "Circuit breaking: the cluster's limits were reached.";
    NO_ROUTE = 3, "NR", "No route (or no cluster) for the request.";
    UPSTREAM_RETRY_LIMIT = 4, "URX", "Retries ran out.";
    DOWNSTREAM_TERMINATION = 5, "DC", "The client closed the connection.";
    UPSTREAM_TERMINATION = 6, "UC", "The upstream closed or reset the connection.";
    UPSTREAM_TIMEOUT = 7, "UT", "The route's timeout passed.";
    DELAY_INJECTED = 8, "DI", "A fault delay was injected.";
    FAULT_INJECTED = 9, "FI", "A fault abort was injected.";
    RATE_LIMITED = 10, "RL", "A local rate limit refused the request.";
    EXT_AUTHZ_DENIED = 11, "UAEX", "The external authorizer refused the request.";
    RBAC_DENIED = 12, "RBAC", "An AuthorizationPolicy refused the request.";
}

impl Flags {
    /// No flag.
    pub const NONE: Flags = Flags(0);

    /// Adds `other`.
    pub fn add(&mut self, other: Flags) {
        self.0 |= other.0;
    }

    /// Whether every flag of `other` is set.
    pub fn has(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Envoy's text: the codes joined by commas, `-` when empty.
    pub fn text(self) -> String {
        if self == Flags::NONE {
            return "-".to_string();
        }
        Flags::CODES
            .iter()
            .filter(|(f, _)| self.has(*f))
            .map(|(_, code)| *code)
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_in_envoy_order() {
        let mut f = Flags::NONE;
        assert_eq!(f.text(), "-");
        f.add(Flags::UPSTREAM_RETRY_LIMIT);
        f.add(Flags::UPSTREAM_CONNECTION_FAILURE);
        assert_eq!(f.text(), "UF,URX");
        assert!(f.has(Flags::UPSTREAM_CONNECTION_FAILURE) && !f.has(Flags::NO_ROUTE));
    }
}
