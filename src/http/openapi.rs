//! The HTTP API's route table and its OpenAPI 3.1 document (`GET /v1/openapi.json`).
//!
//! Every API route is registered through [`ApiRoutes::add`] with its method, path, roles and
//! a one-line summary. The router and the document are both built from that one table, so a
//! route cannot be served undocumented, nor documented and not served. Adding a route is one
//! line in its module's `routes()`:
//!
//! ```text
//! .add(Get, "/v1/things/{id}", "bureau, admin", "one thing of the caller's counties", thing)
//! ```
//!
//! A unit test below refuses any axum `route` call for a `/v1` path written around the table
//! in `src/http`, and
//! the `admin_api` integration test asks the running server for every documented route (none
//! may answer the router's own 404 or 405). The console's HTML pages (`/console`, `/public`)
//! are not part of the API and are not documented here.

use std::sync::Arc;

use axum::handler::Handler;
use axum::response::IntoResponse;
use axum::routing::{on, MethodFilter};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::AppState;

/// The path of the document itself.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

/// An HTTP method of a documented route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// `DELETE`.
    Delete,
}

impl Method {
    /// The method's name in the document (lower case).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Delete => "delete",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
            Method::Delete => MethodFilter::DELETE,
        }
    }
}

/// One documented route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Its method.
    pub method: Method,
    /// Its path, with `{name}` parameters (axum and OpenAPI spell them alike).
    pub path: &'static str,
    /// The roles it allows (`none` when no token is needed).
    pub roles: &'static str,
    /// What it answers, in one line.
    pub summary: &'static str,
}

/// The API routes and their table, built together.
pub struct ApiRoutes {
    router: Router<Arc<AppState>>,
    ops: Vec<Op>,
}

impl Default for ApiRoutes {
    fn default() -> Self {
        ApiRoutes::new()
    }
}

impl ApiRoutes {
    /// No routes yet.
    pub fn new() -> ApiRoutes {
        ApiRoutes {
            router: Router::new(),
            ops: Vec::new(),
        }
    }

    /// Serves `handler` at `method path` and documents it with `roles` and `summary`.
    pub fn add<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        roles: &'static str,
        summary: &'static str,
        handler: H,
    ) -> ApiRoutes
    where
        H: Handler<T, Arc<AppState>>,
        T: 'static,
    {
        // Two methods on one path are merged into one method router by axum.
        self.router = self.router.route(path, on(method.filter(), handler));
        self.ops.push(Op {
            method,
            path,
            roles,
            summary,
        });
        self
    }

    /// Adds another module's routes.
    pub fn merge(mut self, other: ApiRoutes) -> ApiRoutes {
        self.router = self.router.merge(other.router);
        self.ops.extend(other.ops);
        self
    }

    /// The documented routes so far.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The router, with `GET /v1/openapi.json` serving the document of every route
    /// (itself included).
    pub fn into_router(mut self) -> Router<Arc<AppState>> {
        self.ops.push(Op {
            method: Method::Get,
            path: OPENAPI_PATH,
            roles: "none",
            summary: "this document (OpenAPI 3.1)",
        });
        let doc = Arc::new(document(&self.ops));
        let serve = move || {
            let doc = doc.clone();
            async move { Json(doc.as_ref().clone()).into_response() }
        };
        self.router
            .route(OPENAPI_PATH, on(MethodFilter::GET, serve))
    }
}

/// The path parameters of `path` (`{id}` → `id`).
fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

/// The document's introduction.
const DESCRIPTION: &str = "Lab batch uploads, bureau and admin reads, registry and quarantine \
    management. Authenticate with `Authorization: Bearer TOKEN` (tokens from `soilmon tokens \
    add`); a console session cookie works too, and then every state-changing request needs \
    its `X-CSRF-Token` header. Every refusal is an object with an `error` text, with its \
    status.";

/// The OpenAPI 3.1 document of `ops`.
pub fn document(ops: &[Op]) -> Value {
    let mut paths = Map::new();
    for op in ops {
        let item = paths
            .entry(op.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(methods) = item {
            methods.insert(op.method.as_str().to_string(), operation(op));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "soilmon HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": DESCRIPTION,
            "license": {"name": "Apache-2.0"},
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "soilmon_session"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                },
            },
        },
    })
}

/// One operation of the document.
fn operation(op: &Op) -> Value {
    let error = json!({"$ref": "#/components/schemas/Error"});
    let refusal = |what: &str| json!({"description": what, "content": {"application/json": {"schema": error}}});
    let mut responses = Map::new();
    responses.insert("2XX".into(), json!({"description": op.summary}));
    let open = op.roles == "none";
    if !open {
        responses.insert("401".into(), refusal("no or an invalid token"));
        responses.insert("403".into(), refusal("a role not allowed here"));
        responses.insert("429".into(), refusal("rate limited (Retry-After)"));
    }
    responses.insert("default".into(), refusal("refused or failed"));
    let parameters: Vec<Value> = path_params(op.path)
        .into_iter()
        .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    let tag = op
        .path
        .trim_start_matches("/v1/")
        .trim_start_matches('/')
        .split(['/', '.'])
        .next()
        .unwrap_or("");
    let op_id = format!(
        "{}_{}",
        op.method.as_str(),
        op.path
            .trim_start_matches('/')
            .replace(['/', '.', '{', '}'], "_")
    );
    let mut o = json!({
        "operationId": op_id,
        "summary": op.summary,
        "description": format!("Roles: {}.", op.roles),
        "tags": [tag],
        "responses": responses,
    });
    if !parameters.is_empty() {
        o["parameters"] = Value::Array(parameters);
    }
    o["security"] = if open {
        json!([])
    } else {
        json!([{"bearer": []}, {"session": []}])
    };
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops() -> Vec<Op> {
        vec![
            Op {
                method: Method::Get,
                path: "/v1/points/{point_id}/readings",
                roles: "bureau, admin",
                summary: "readings",
            },
            Op {
                method: Method::Delete,
                path: "/v1/tokens/{name}",
                roles: "admin",
                summary: "revoke",
            },
            Op {
                method: Method::Post,
                path: "/v1/tokens",
                roles: "admin",
                summary: "add",
            },
            Op {
                method: Method::Get,
                path: "/v1/tokens",
                roles: "admin",
                summary: "list",
            },
        ]
    }

    #[test]
    fn two_methods_of_one_path_share_its_item_and_parameters_are_declared() {
        let doc = document(&ops());
        let tokens = &doc["paths"]["/v1/tokens"];
        assert_eq!(tokens["get"]["summary"], "list");
        assert_eq!(tokens["post"]["summary"], "add");
        let readings = &doc["paths"]["/v1/points/{point_id}/readings"]["get"];
        assert_eq!(readings["parameters"][0]["name"], "point_id");
        assert_eq!(readings["parameters"][0]["in"], "path");
        assert_eq!(readings["tags"][0], "points");
        assert_eq!(readings["operationId"], "get_v1_points__point_id__readings");
        assert_eq!(doc["openapi"], "3.1.0");
    }

    #[test]
    fn every_path_parameter_is_declared_in_the_real_table() {
        let routes = crate::http::api_routes();
        let doc = document(routes.ops());
        let Value::Object(paths) = &doc["paths"] else {
            panic!("no paths");
        };
        assert!(paths.len() > 20, "{}", paths.len());
        for (path, item) in paths {
            let Value::Object(methods) = item else {
                panic!("{path}");
            };
            for (m, o) in methods {
                let declared: Vec<&str> = o["parameters"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
                    .unwrap_or_default();
                assert_eq!(declared, path_params(path), "{m} {path}");
            }
        }
    }

    /// Every API route goes through the table: no axum `route` call for a `/v1` path beside it.
    #[test]
    fn no_api_route_is_registered_around_the_table() {
        fn visit(dir: &std::path::Path, found: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    visit(&p, found);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    let compact: String = text.split_whitespace().collect();
                    for needle in [".route(\"/v1", ".route(\"/healthz", ".nest(\"/v1"] {
                        if compact.contains(needle) {
                            found.push(format!("{}: {needle}", p.display()));
                        }
                    }
                }
            }
        }
        let mut found = Vec::new();
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
        visit(&src, &mut found);
        assert!(found.is_empty(), "routes outside the table: {found:?}");
    }
}
