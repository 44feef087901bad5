//! The three ways traffic is split: Istio VirtualService route weights,
//! Gateway API HTTPRoute backend weights, and a Service whose selector
//! points at one colour (blue/green: all or nothing).

use runbook_sdk::kube::{self, ObjectRef, PatchKind};
use runbook_sdk::serde_json::{Value, json};
use runbook_sdk::{Deserialize, Error, JsonSchema};

/// Where the traffic split lives.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(
    crate = "runbook_sdk::serde",
    tag = "type",
    rename_all = "kebab-case",
    deny_unknown_fields
)]
#[schemars(crate = "runbook_sdk::schemars")]
pub enum Router {
    /// An Istio VirtualService whose HTTP route has a stable and a canary
    /// destination.
    Istio {
        /// Its namespace.
        namespace: String,
        /// The VirtualService.
        virtual_service: String,
        /// The HTTP route's `name`; default the first route.
        #[serde(default)]
        route: Option<String>,
        /// The stable destination's `subset` (or `host`).
        stable: String,
        /// The canary destination's `subset` (or `host`).
        canary: String,
    },
    /// A Gateway API HTTPRoute whose rule has a stable and a canary backend.
    GatewayApi {
        /// Its namespace.
        namespace: String,
        /// The HTTPRoute.
        http_route: String,
        /// The rule's index (default 0).
        #[serde(default)]
        rule: usize,
        /// The stable backend Service's name.
        stable: String,
        /// The canary backend Service's name.
        canary: String,
    },
    /// Blue/green: a Service whose selector names the live colour.
    Service {
        /// Its namespace.
        namespace: String,
        /// The Service.
        service: String,
        /// The selector key that names the colour (default `version`).
        #[serde(default)]
        selector_key: Option<String>,
        /// The stable colour (`blue`).
        stable: String,
        /// The new colour (`green`).
        canary: String,
    },
}

impl Router {
    /// The object holding the split.
    pub fn object(&self) -> ObjectRef {
        match self {
            Router::Istio {
                namespace,
                virtual_service,
                ..
            } => ObjectRef::new(
                "networking.istio.io/v1",
                "VirtualService",
                namespace,
                virtual_service,
            ),
            Router::GatewayApi {
                namespace,
                http_route,
                ..
            } => ObjectRef::new(
                "gateway.networking.k8s.io/v1",
                "HTTPRoute",
                namespace,
                http_route,
            ),
            Router::Service {
                namespace, service, ..
            } => ObjectRef::new("v1", "Service", namespace, service),
        }
    }

    /// Whether only 0% and 100% make sense.
    pub fn all_or_nothing(&self) -> bool {
        matches!(self, Router::Service { .. })
    }

    /// For the weighted routers: where the destinations are, and which
    /// of them are stable and canary.
    fn weighted(&self, object: &Value) -> Result<Weighted, Error> {
        match self {
            Router::Istio {
                route,
                stable,
                canary,
                ..
            } => {
                let (index, entries) = istio_route(object, route.as_deref())?;
                let (stable_at, canary_at) =
                    positions(&entries, stable, canary, destination_matches)?;
                Ok(Weighted {
                    pointer: format!("/spec/http/{index}/route"),
                    entries,
                    stable_at,
                    canary_at,
                })
            }
            Router::GatewayApi {
                rule,
                stable,
                canary,
                ..
            } => {
                let pointer = format!("/spec/rules/{rule}/backendRefs");
                let entries = object
                    .pointer(&pointer)
                    .and_then(Value::as_array)
                    .cloned()
                    .ok_or_else(|| {
                        Error::failed(format!("HTTPRoute has no rule {rule} with backendRefs"))
                    })?;
                let (stable_at, canary_at) = positions(&entries, stable, canary, backend_matches)?;
                Ok(Weighted {
                    pointer,
                    entries,
                    stable_at,
                    canary_at,
                })
            }
            Router::Service { .. } => Err(Error::failed("a Service router has no weights")),
        }
    }

    /// The stable and canary names (colours, subsets, backends).
    pub fn names(&self) -> (&str, &str) {
        match self {
            Router::Istio { stable, canary, .. }
            | Router::GatewayApi { stable, canary, .. }
            | Router::Service { stable, canary, .. } => (stable, canary),
        }
    }

    /// A Service router's selector key that names the colour.
    fn selector_key(&self) -> &str {
        match self {
            Router::Service { selector_key, .. } => selector_key.as_deref().unwrap_or("version"),
            _ => "",
        }
    }

    /// For a Service router: the colour its selector names now, read from
    /// the cluster (`None` for the weighted routers).
    pub fn live_colour(&self) -> Result<Option<String>, Error> {
        if !self.all_or_nothing() {
            return Ok(None);
        }
        let object = kube::get_existing(&self.object())?;
        let key = self.selector_key();
        let pointer = format!(
            "/spec/selector/{}",
            key.replace('~', "~0").replace('/', "~1")
        );
        match object.pointer(&pointer).and_then(Value::as_str) {
            Some(live) => Ok(Some(live.to_owned())),
            None => Err(Error::failed(format!(
                "{} has no selector `{key}`: set `selector_key` to the selector key that names the colour",
                self.object()
            ))),
        }
    }

    /// Why a Service router must not switch: the colour it would switch
    /// to already carries all traffic, so the new version was deployed
    /// onto the colour users are on.
    pub fn live_target_refusal(&self) -> Error {
        let (_, canary) = self.names();
        Error::failed(format!(
            "{canary} already carries all traffic: the new version was deployed onto the live colour; compute the target from the live selector (k8s-read), as `${{{{ steps.live.outputs.colour == 'blue' && 'green' || 'blue' }}}}` ({} selects {}={canary}; if this step itself switched it before the run stopped, resume with `--skip` for this step)",
            self.object(),
            self.selector_key()
        ))
    }

    /// The canary's current share of traffic, in percent.
    pub fn canary_weight(&self) -> Result<u32, Error> {
        let (stable, canary) = self.names();
        if let Some(live) = self.live_colour()? {
            return match live {
                live if live == canary => Ok(100),
                live if live == stable => Ok(0),
                live => Err(Error::failed(format!(
                    "the Service selects {}={live}, neither `{stable}` nor `{canary}`",
                    self.selector_key()
                ))),
            };
        }
        let object = kube::get_existing(&self.object())?;
        let weighted = self.weighted(&object)?;
        Ok(weight(&weighted.entries[weighted.canary_at]))
    }

    /// Sends `canary` percent to the canary and the rest to stable.
    pub fn set(&self, canary_percent: u32) -> Result<(), Error> {
        let object_ref = self.object();
        match self {
            Router::Service {
                selector_key,
                stable,
                canary,
                ..
            } => {
                let key = selector_key.as_deref().unwrap_or("version");
                let colour = if canary_percent >= 100 {
                    canary
                } else {
                    stable
                };
                kube::patch(
                    &object_ref,
                    PatchKind::Merge,
                    &json!({"spec": {"selector": {key: colour}}}),
                )?;
            }
            _ => {
                let object = kube::get_existing(&object_ref)?;
                let Weighted {
                    pointer,
                    mut entries,
                    stable_at,
                    canary_at,
                } = self.weighted(&object)?;
                entries[stable_at]["weight"] = json!(100 - canary_percent);
                entries[canary_at]["weight"] = json!(canary_percent);
                let patch = json!([{"op": "replace", "path": pointer, "value": entries}]);
                kube::patch(&object_ref, PatchKind::Json, &patch)?;
            }
        }
        Ok(())
    }
}

/// A weighted router's destinations.
struct Weighted {
    /// JSON pointer to the list.
    pointer: String,
    entries: Vec<Value>,
    stable_at: usize,
    canary_at: usize,
}

fn weight(entry: &Value) -> u32 {
    entry
        .get("weight")
        .and_then(Value::as_u64)
        .and_then(|weight| u32::try_from(weight).ok())
        .unwrap_or(0)
}

fn istio_route(object: &Value, name: Option<&str>) -> Result<(usize, Vec<Value>), Error> {
    let routes = object
        .pointer("/spec/http")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::failed("the VirtualService has no `spec.http` routes"))?;
    let index = match name {
        Some(name) => routes
            .iter()
            .position(|route| route["name"] == name)
            .ok_or_else(|| {
                Error::failed(format!(
                    "the VirtualService has no HTTP route named `{name}`"
                ))
            })?,
        None => 0,
    };
    let destinations = routes
        .get(index)
        .and_then(|route| route["route"].as_array())
        .cloned()
        .ok_or_else(|| Error::failed("the VirtualService's HTTP route has no destinations"))?;
    Ok((index, destinations))
}

fn destination_matches(entry: &Value, wanted: &str) -> bool {
    entry.pointer("/destination/subset").and_then(Value::as_str) == Some(wanted)
        || (entry.pointer("/destination/subset").is_none()
            && entry.pointer("/destination/host").and_then(Value::as_str) == Some(wanted))
}

fn backend_matches(entry: &Value, wanted: &str) -> bool {
    entry.get("name").and_then(Value::as_str) == Some(wanted)
}

/// Where the stable and the canary entries are.
fn positions(
    entries: &[Value],
    stable: &str,
    canary: &str,
    matches: fn(&Value, &str) -> bool,
) -> Result<(usize, usize), Error> {
    let find = |wanted: &str| {
        entries
            .iter()
            .position(|entry| matches(entry, wanted))
            .ok_or_else(|| {
                Error::failed(format!(
                    "no destination `{wanted}` in the route (it has: {})",
                    Value::Array(entries.to_vec())
                ))
            })
    };
    Ok((find(stable)?, find(canary)?))
}
