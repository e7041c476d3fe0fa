//! Impersonation (`Impersonate-User`, `Impersonate-Group`, `Impersonate-Uid` headers, `kubectl --as`),
//! allowed by the `impersonate` verb on users, groups, serviceaccounts and uids.

use axum::http::HeaderMap;

use super::attributes::forbidden;
use super::{AUTHENTICATED, Attributes, Authorizer, UNAUTHENTICATED, UserInfo, tokens};
use crate::api::status::ApiError;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";

fn values<'a>(headers: &'a HeaderMap, name: &str) -> Result<Vec<&'a str>, ApiError> {
    headers
        .get_all(name)
        .iter()
        .map(|v| {
            v.to_str()
                .map(str::trim)
                .map_err(|_| ApiError::bad_request(format!("invalid {name} header")))
        })
        .collect()
}

/// The user a request acts as: `user` itself without impersonation headers, else the impersonated user
/// after checking that `user` may impersonate each requested identity.
pub fn apply(user: UserInfo, headers: &HeaderMap, authz: &dyn Authorizer) -> Result<UserInfo, ApiError> {
    let names = values(headers, USER)?;
    let groups = values(headers, GROUP)?;
    let uids = values(headers, UID)?;
    let has_extra = headers
        .keys()
        .any(|k| k.as_str().starts_with("impersonate-extra-"));
    let Some(&name) = names.first() else {
        if groups.is_empty() && uids.is_empty() && !has_extra {
            return Ok(user);
        }
        return Err(ApiError::bad_request(
            "requested impersonation of groups, uid or extra without impersonating a user",
        ));
    };
    if names.len() > 1 || uids.len() > 1 {
        return Err(ApiError::bad_request(
            "only one user and one uid may be impersonated",
        ));
    }
    let check = |attrs: Attributes| match authz.authorize(&user, &attrs) {
        Ok(()) => Ok(()),
        Err(reason) => Err(forbidden(&user, &attrs, &reason)),
    };
    let mut target_groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
    match tokens::parse_username(name) {
        Some((ns, sa)) => {
            check(Attributes::resource("impersonate", "", "serviceaccounts", ns, sa))?;
            if groups.is_empty() {
                target_groups = tokens::groups(ns);
            }
        }
        None => check(Attributes::resource("impersonate", "", "users", "", name))?,
    }
    for group in &groups {
        check(Attributes::resource("impersonate", "", "groups", "", group))?;
    }
    if let Some(uid) = uids.first() {
        check(Attributes::resource(
            "impersonate",
            "authentication.k8s.io",
            "uids",
            "",
            uid,
        ))?;
    }
    let implied = if name == "system:anonymous" {
        UNAUTHENTICATED
    } else {
        AUTHENTICATED
    };
    if !target_groups.iter().any(|g| g == implied) {
        target_groups.push(implied.to_owned());
    }
    Ok(UserInfo {
        name: name.to_owned(),
        uid: uids.first().map(|u| (*u).to_owned()).unwrap_or_default(),
        groups: target_groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// Allows `impersonate` on users named "jane", groups named "devs" and serviceaccounts in "ns1".
    struct Policy;

    impl Authorizer for Policy {
        fn authorize(&self, user: &UserInfo, a: &Attributes) -> Result<(), String> {
            let ok = user.name == "admin"
                && a.verb == "impersonate"
                && match a.resource.as_str() {
                    "users" => a.name == "jane",
                    "groups" => a.name == "devs",
                    "serviceaccounts" => a.namespace == "ns1",
                    _ => false,
                };
            if ok { Ok(()) } else { Err(String::new()) }
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn impersonation_needs_the_impersonate_verb_on_each_identity() {
        let admin = UserInfo::authenticated("admin".into(), vec![]);
        let same = apply(admin.clone(), &HeaderMap::new(), &Policy).unwrap();
        assert_eq!(same, admin);
        let jane = apply(
            admin.clone(),
            &headers(&[("Impersonate-User", "jane"), ("Impersonate-Group", "devs")]),
            &Policy,
        )
        .unwrap();
        assert_eq!(jane.name, "jane");
        assert_eq!(jane.groups, vec!["devs".to_owned(), AUTHENTICATED.to_owned()]);
        let denied = apply(admin.clone(), &headers(&[("Impersonate-User", "john")]), &Policy).unwrap_err();
        assert_eq!(denied.code, 403);
        assert_eq!(
            denied.message,
            "users \"john\" is forbidden: User \"admin\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        );
        let group_denied = apply(
            admin.clone(),
            &headers(&[
                ("Impersonate-User", "jane"),
                ("Impersonate-Group", "system:masters"),
            ]),
            &Policy,
        );
        assert_eq!(group_denied.unwrap_err().code, 403);
        let sa = apply(
            admin.clone(),
            &headers(&[("Impersonate-User", "system:serviceaccount:ns1:robot")]),
            &Policy,
        )
        .unwrap();
        assert!(sa.groups.contains(&"system:serviceaccounts:ns1".to_owned()));
        let jane_user = UserInfo::authenticated("jane".into(), vec![]);
        assert_eq!(
            apply(jane_user, &headers(&[("Impersonate-User", "jane")]), &Policy)
                .unwrap_err()
                .code,
            403
        );
        assert_eq!(
            apply(admin, &headers(&[("Impersonate-Group", "devs")]), &Policy)
                .unwrap_err()
                .code,
            400
        );
    }
}
