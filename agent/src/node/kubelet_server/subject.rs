//! Reads the subject of a verified client certificate (DER): CN is the user, each O a group, as
//! Kubernetes maps X.509 client certificates.

/// One DER TLV: tag, contents, and the input after it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[count..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const CONTEXT_0: u8 = 0xa0;
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_O: &[u8] = &[0x55, 0x04, 0x0a];

/// The certificate's subject common name and organizations; `None` for input that is not a certificate
/// or has no CN.
pub fn user_and_groups(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (SEQUENCE, cert, _) = tlv(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = tlv(cert)? else {
        return None;
    };
    // [0] version (optional), serialNumber, signature, issuer, validity, then the subject.
    let mut rest = tbs;
    if let (CONTEXT_0, _, after) = tlv(rest)? {
        rest = after;
    }
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (SEQUENCE, mut name, _) = tlv(rest)? else {
        return None;
    };
    let (mut cn, mut orgs) = (None, Vec::new());
    while !name.is_empty() {
        let (SET, mut set, next) = tlv(name)? else {
            return None;
        };
        name = next;
        while !set.is_empty() {
            let (_, attr, next_attr) = tlv(set)?;
            set = next_attr;
            let (_, oid, value) = tlv(attr)?;
            let text = String::from_utf8(tlv(value)?.1.to_vec()).ok()?;
            match oid {
                OID_CN => cn = Some(text),
                OID_O => orgs.push(text),
                _ => {}
            }
        }
    }
    Some((cn?, orgs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn cert(cn: Option<&str>, orgs: &[&str]) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        for o in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn cn_is_the_user_and_organizations_the_groups() {
        assert_eq!(
            user_and_groups(&cert(Some("system:node:n1"), &["system:nodes"])),
            Some(("system:node:n1".to_owned(), vec!["system:nodes".to_owned()]))
        );
        assert_eq!(user_and_groups(&cert(None, &["g"])), None);
    }

    #[test]
    fn truncated_input_is_none_not_a_panic() {
        let der = cert(Some("u"), &[]);
        for cut in 0..der.len() {
            assert_eq!(user_and_groups(&der[..cut]), None);
        }
        assert_eq!(user_and_groups(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
