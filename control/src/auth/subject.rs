//! Reads the subject (CN and O) of an X.509 certificate from DER: the user name and groups of a client.

/// One DER TLV: tag, contents, and the rest of the input after it.
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
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_O: &[u8] = &[0x55, 0x04, 0x0a];

/// The subject's common name and organizations, as Kubernetes maps them to user and groups.
pub fn subject(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (tag, cert, _) = tlv(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    // Optional [0] version, then serialNumber, signature, issuer, validity, subject.
    let (tag, _, after) = tlv(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (tag, mut name, _) = tlv(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (mut cn, mut orgs) = (None, Vec::new());
    while !name.is_empty() {
        let (tag, mut set, next) = tlv(name)?;
        name = next;
        if tag != SET {
            return None;
        }
        while !set.is_empty() {
            let (_, attr, next_attr) = tlv(set)?;
            set = next_attr;
            let (_, oid, value) = tlv(attr)?;
            let (_, text, _) = tlv(value)?;
            let text = String::from_utf8(text.to_vec()).ok()?;
            if oid == OID_CN {
                cn = Some(text);
            } else if oid == OID_O {
                orgs.push(text);
            }
        }
    }
    Some((cn?, orgs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    #[test]
    fn reads_cn_and_organizations() {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        params.distinguished_name.push(DnType::CommonName, "admin");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject(cert.der()),
            Some(("admin".to_owned(), vec!["system:masters".to_owned()]))
        );
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        assert_eq!(subject(&[]), None);
        assert_eq!(subject(&[0x30, 0x82, 0xff]), None);
        assert_eq!(subject(&[0x30, 0x03, 0x02, 0x01, 0x00]), None);
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "x");
        let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        let der = cert.der().to_vec();
        for cut in 0..der.len() {
            let _ = subject(&der[..cut]);
        }
    }
}
