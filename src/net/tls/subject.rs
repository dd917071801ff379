//! Who a client is: the subject of its certificate as an RFC 4514 string
//! (`CN=ingest-1,O=Example`), read strictly from the certificate's own
//! DER, so that a name reads the same whatever string types its issuer
//! chose and a malformed one can never pass for a trusted name. Pure: no
//! I/O.

use rustls::pki_types::CertificateDer;

/// A certificate's subject as an RFC 4514 string (`CN=ingest-1,O=Example`:
/// the most specific RDN first), for validators' `JNHP_PEER_CERT_SUBJECT`.
///
/// Values of the directory string types are decoded to text first, so a
/// name reads the same whatever type its issuer chose (see
/// `attribute_text`); other values are `#` and the hex of their whole DER
/// encoding. Then RFC 4514's escapes apply, and every control character is
/// escaped too (`escape`): the string is one line of printable text.
/// Attribute types without a short name are their dotted OID, every arc
/// in decimal whatever its size.
///
/// The subject is read here, strictly, from the certificate's own bytes
/// (not from a parser that stops at the first RDN it cannot read): a
/// subject that is not a well-formed DER Name in full (an empty RDN, an
/// attribute without a value or with an extra element, trailing bytes)
/// is `#` and the hex of the whole Name's DER. No RFC 4514 string starts
/// with `#`, so such a subject never reads as, or as part of, a name a
/// rule trusts; it is never shown shortened.
pub fn subject(cert: &CertificateDer) -> Option<String> {
    // The certificate must parse as one (as before); the subject is then
    // taken from its DER: Certificate { TBSCertificate { [0] version
    // (optional), serial, signature, issuer, validity, subject, .. }, .. }.
    x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let (certificate, _) = der_tlv(cert.as_ref()).ok()?;
    let (tbs, _) = der_tlv(certificate.content).ok()?;
    let mut rest = tbs.content;
    let mut fields = Vec::new();
    while !rest.is_empty() && fields.len() < 7 {
        let (field, after) = der_tlv(rest).ok()?;
        fields.push(field);
        rest = after;
    }
    let skip = usize::from(fields.first()?.tag == [0xa0]);
    let name = fields.get(skip + 4)?;
    Some(rfc4514_name(name).unwrap_or_else(|()| hex(name.whole)))
}

/// One DER element: its identifier octets, its contents and the whole
/// encoding.
pub(super) struct Tlv<'a> {
    tag: &'a [u8],
    content: &'a [u8],
    whole: &'a [u8],
}

/// Reads one DER element off the front of `data`: the element and the
/// bytes after it. `Err` for anything that is not DER (a truncated
/// element, an indefinite or non-minimal length).
pub(super) fn der_tlv(data: &[u8]) -> Result<(Tlv<'_>, &[u8]), ()> {
    let mut at = 1;
    if *data.first().ok_or(())? & 0x1f == 0x1f {
        // High tag number: base-128 octets, the last without bit 8.
        loop {
            let b = *data.get(at).ok_or(())?;
            at += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    let tag_end = at;
    let first = *data.get(at).ok_or(())?;
    at += 1;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > std::mem::size_of::<usize>() {
            return Err(()); // indefinite, or longer than memory
        }
        let bytes = data.get(at..at + octets).ok_or(())?;
        at += octets;
        if bytes[0] == 0 {
            return Err(()); // not minimal
        }
        let len = bytes.iter().fold(0usize, |a, &b| (a << 8) | usize::from(b));
        if len < 0x80 {
            return Err(()); // the short form was required
        }
        len
    };
    let end = at.checked_add(len).ok_or(())?;
    let content = data.get(at..end).ok_or(())?;
    Ok((
        Tlv {
            tag: &data[..tag_end],
            content,
            whole: &data[..end],
        },
        &data[end..],
    ))
}

/// The elements a constructed DER value holds, each with the tag `tag`;
/// `Err` if any is not, or the contents do not split into elements.
pub(super) fn der_elements<'a>(content: &'a [u8], tag: u8) -> Result<Vec<Tlv<'a>>, ()> {
    let mut rest = content;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (element, after) = der_tlv(rest)?;
        if element.tag != [tag] {
            return Err(());
        }
        out.push(element);
        rest = after;
    }
    Ok(out)
}

/// RFC 4514 string of a DER Name (a SEQUENCE of non-empty SETs of
/// SEQUENCE { OID, value }), most specific RDN first; `Err` unless all of
/// it is exactly that.
pub(super) fn rfc4514_name(name: &Tlv) -> Result<String, ()> {
    use x509_parser::der_parser::asn1_rs::{Any, FromDer};
    if name.tag != [0x30] {
        return Err(());
    }
    let mut rdns = Vec::new();
    for rdn in der_elements(name.content, 0x31)? {
        let atvs = der_elements(rdn.content, 0x30)?;
        if atvs.is_empty() {
            return Err(());
        }
        let mut parts = Vec::with_capacity(atvs.len());
        for atv in atvs {
            let (oid, rest) = der_tlv(atv.content)?;
            let (value, rest) = der_tlv(rest)?;
            if oid.tag != [0x06] || !rest.is_empty() {
                return Err(());
            }
            let oid = dotted_oid(oid.content)?;
            let name = short_name(&oid).map_or(oid, str::to_string);
            let text = Any::from_der(value.whole)
                .ok()
                .and_then(|(_, any)| attribute_text(&any));
            let value = match text {
                Some(text) => escape(&text),
                None => hex(value.whole),
            };
            parts.push(format!("{name}={value}"));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

/// The dotted form of an OID's DER contents: subidentifiers of 7 bits a
/// byte, of any size (UUID arcs under 2.25 are 128 bits), the first one
/// holding the first two arcs (40 × first + second, where the first is 0,
/// 1 or 2 and only under 2 may the second be 40 or more). `Err` for an
/// encoding DER forbids (empty, a subidentifier padded with 0x80, one cut
/// off at the end).
pub(super) fn dotted_oid(content: &[u8]) -> Result<String, ()> {
    let mut arcs: Vec<String> = Vec::new();
    let mut rest = content;
    if rest.is_empty() {
        return Err(());
    }
    while !rest.is_empty() {
        let end = rest.iter().position(|&b| b & 0x80 == 0).ok_or(())?;
        let (digits, after) = rest.split_at(end + 1);
        rest = after;
        if digits[0] == 0x80 {
            return Err(()); // not minimal
        }
        let number = Decimal::from_base128(digits);
        if arcs.is_empty() {
            let (first, second) = match number.small() {
                Some(n) if n < 40 => (0, Decimal::from_u64(n)),
                Some(n) if n < 80 => (1, Decimal::from_u64(n - 40)),
                _ => (2, number.minus(80)),
            };
            arcs.push(first.to_string());
            arcs.push(second.to_string());
        } else {
            arcs.push(number.to_string());
        }
    }
    Ok(arcs.join("."))
}

/// A non-negative integer of any size, in base 10^9 limbs (least
/// significant first), for OID arcs beyond 64 bits.
pub(super) struct Decimal(Vec<u32>);

impl Decimal {
    const BASE: u64 = 1_000_000_000;

    fn from_u64(mut n: u64) -> Decimal {
        let mut limbs = vec![];
        loop {
            limbs.push((n % Self::BASE) as u32);
            n /= Self::BASE;
            if n == 0 {
                return Decimal(limbs);
            }
        }
    }

    /// The value of base-128 digits (bit 8 of each is a continuation flag).
    fn from_base128(digits: &[u8]) -> Decimal {
        let mut limbs = vec![0u32];
        for &d in digits {
            let mut carry = u64::from(d & 0x7f);
            for limb in &mut limbs {
                let v = u64::from(*limb) * 128 + carry;
                *limb = (v % Self::BASE) as u32;
                carry = v / Self::BASE;
            }
            while carry > 0 {
                limbs.push((carry % Self::BASE) as u32);
                carry /= Self::BASE;
            }
        }
        Decimal(limbs)
    }

    /// The value, if it fits in a u64 below 10^18.
    fn small(&self) -> Option<u64> {
        match self.0.as_slice() {
            [low] => Some(u64::from(*low)),
            [low, high] => Some(u64::from(*high) * Self::BASE + u64::from(*low)),
            _ => None,
        }
    }

    /// The value minus `n`, for a value of at least `n` (here: at least 80).
    fn minus(mut self, n: u32) -> Decimal {
        let mut borrow = u64::from(n);
        for limb in &mut self.0 {
            let v = u64::from(*limb);
            if v >= borrow {
                *limb = (v - borrow) as u32;
                break;
            }
            *limb = (v + Self::BASE - borrow) as u32;
            borrow = 1;
        }
        while self.0.len() > 1 && self.0.last() == Some(&0) {
            self.0.pop();
        }
        self
    }
}

impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut limbs = self.0.iter().rev();
        if let Some(top) = limbs.next() {
            write!(f, "{top}")?;
        }
        for limb in limbs {
            write!(f, "{limb:09}")?;
        }
        Ok(())
    }
}

/// RFC 4514's `#` form: `#` and the hex of `der`.
pub(super) fn hex(der: &[u8]) -> String {
    let mut out = String::with_capacity(1 + 2 * der.len());
    out.push('#');
    for b in der {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The text of a directory string value, decoded by its type: UTF8String
/// as UTF-8; PrintableString, IA5String, NumericString and VisibleString
/// as ASCII; TeletexString as Latin-1 (what issuers put there in
/// practice); BMPString as UTF-16BE; UniversalString as UTF-32BE. `None`
/// for any other type, and for a value its type cannot hold (invalid
/// UTF-8, a byte over 0x7F in an ASCII type, an odd length, a lone
/// surrogate): those are shown as hex, never guessed at.
pub(super) fn attribute_text(value: &x509_parser::der_parser::asn1_rs::Any) -> Option<String> {
    use x509_parser::der_parser::asn1_rs::{Class, Tag};
    if value.class() != Class::Universal || value.header.is_constructed() {
        return None;
    }
    let data = value.data;
    match value.tag() {
        Tag::Utf8String => String::from_utf8(data.to_vec()).ok(),
        Tag::PrintableString | Tag::Ia5String | Tag::NumericString | Tag::VisibleString => data
            .is_ascii()
            .then(|| data.iter().map(|&b| char::from(b)).collect()),
        Tag::TeletexString => Some(data.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString => {
            if !data.len().is_multiple_of(2) {
                return None;
            }
            let units = data
                .chunks_exact(2)
                .map(|u| u16::from_be_bytes([u[0], u[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        Tag::UniversalString => {
            if !data.len().is_multiple_of(4) {
                return None;
            }
            data.chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

/// The short names RFC 4514 (and common use) give attribute types.
pub(super) fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        _ => return None,
    })
}

/// RFC 4514 escaping of an attribute value, and more: besides the
/// characters RFC 4514 must escape (`"+,;<>\`, a leading `#` or space, a
/// trailing space, NUL), every control character (U+0000–U+001F,
/// U+007F–U+009F) is escaped as `\` and the hex of its UTF-8 bytes
/// (newline: `\0A`). A program reading the subject from its environment,
/// or a log line showing it, then never meets a line break, an escape
/// sequence for a terminal, or a byte that ends a C string.
pub(super) fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut utf8 = [0u8; 4];
                for b in c.encode_utf8(&mut utf8).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}
