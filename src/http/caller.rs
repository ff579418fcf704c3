//! Who is calling, checked once per handler by its argument type: [`Caller<R>`] extracts the
//! principal that [`super::gate`] found for the bearer token and refuses the request (401
//! without a valid token, 403 for another role) unless its role is one of `R`'s
//! [`Roles::ALLOWED`]. The county scope a handler reads through is the principal's
//! ([`Caller::scope`]).

use std::marker::PhantomData;
use std::ops::Deref;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::auth::{Principal, Role};
use super::error::ApiError;
use crate::store::queries::Scope;

/// A set of roles a route allows.
pub trait Roles {
    /// The roles, in the order the 403 message names them.
    const ALLOWED: &'static [Role];
}

/// Labs only: uploads.
pub struct LabOnly;
/// Labs and admins: batch reports.
pub struct LabOrAdmin;
/// Bureaus and admins: alerts, incidents, readings (within the caller's counties).
pub struct BureauOrAdmin;
/// Admins only: registry and broker identities.
pub struct AdminOnly;
/// Labs and key supervised enterprises: uploads (an enterprise for its own points only).
pub struct LabOrEnterprise;
/// Enterprises only: their own results.
pub struct EnterpriseOnly;

impl Roles for LabOrEnterprise {
    const ALLOWED: &'static [Role] = &[Role::Lab, Role::Enterprise];
}
impl Roles for EnterpriseOnly {
    const ALLOWED: &'static [Role] = &[Role::Enterprise];
}

impl Roles for LabOnly {
    const ALLOWED: &'static [Role] = &[Role::Lab];
}
impl Roles for LabOrAdmin {
    const ALLOWED: &'static [Role] = &[Role::Lab, Role::Admin];
}
impl Roles for BureauOrAdmin {
    const ALLOWED: &'static [Role] = &[Role::Bureau, Role::Admin];
}
impl Roles for AdminOnly {
    const ALLOWED: &'static [Role] = &[Role::Admin];
}

/// The caller of a route that allows the roles `R`.
pub struct Caller<R> {
    principal: Principal,
    roles: PhantomData<fn() -> R>,
}

impl<R: Roles> Caller<R> {
    /// The caller if `who` holds one of `R`'s roles: 401 without a principal, 403 for
    /// another role.
    pub fn check(who: Option<Principal>) -> Result<Caller<R>, ApiError> {
        let principal = who.ok_or(ApiError::Unauthorized)?;
        if !R::ALLOWED.contains(&principal.role) {
            return Err(ApiError::Forbidden {
                required: R::ALLOWED,
                has: principal.role,
            });
        }
        Ok(Caller {
            principal,
            roles: PhantomData,
        })
    }

    /// The counties whose data the caller may read.
    pub fn scope(&self) -> &Scope {
        &self.principal.scope
    }
}

impl<R> Deref for Caller<R> {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.principal
    }
}

impl<S: Send + Sync, R: Roles> FromRequestParts<S> for Caller<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Caller::check(parts.extensions.get::<Principal>().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role) -> Principal {
        Principal {
            role,
            name: "x".into(),
            scope: Scope::All,
        }
    }

    #[test]
    fn roles_are_checked() {
        assert!(matches!(
            Caller::<AdminOnly>::check(None),
            Err(ApiError::Unauthorized)
        ));
        let refused = Caller::<BureauOrAdmin>::check(Some(principal(Role::Lab)));
        assert!(
            matches!(&refused, Err(ApiError::Forbidden { has: Role::Lab, .. })),
            "{:?}",
            refused.err()
        );
        let ok = Caller::<LabOrAdmin>::check(Some(principal(Role::Admin)));
        assert_eq!(ok.map(|c| c.name.clone()).ok(), Some("x".to_string()));
    }
}
