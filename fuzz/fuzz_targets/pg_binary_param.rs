//! Binary parameter values of every decoded type from a hostile client: never a panic, and
//! the text shown never costs much more than the bytes sent (no zero padding from a huge
//! numeric weight or scale, arrays stop at the limit).
#![no_main]
use gatehouse_pgproto::binary::decode;
use libfuzzer_sys::fuzz_target;

/// The types Gatehouse decodes (scalars, then arrays), so that most inputs reach a decoder.
const OIDS: &[u32] = &[
    16, 17, 18, 19, 20, 21, 23, 25, 26, 114, 142, 650, 700, 701, 705, 869, 1042, 1043, 1082,
    1083, 1114, 1184, 1186, 1266, 1700, 2950, 3802, 4072, 143, 199, 651, 1000, 1001, 1002, 1003,
    1005, 1007, 1009, 1014, 1015, 1016, 1021, 1022, 1028, 1041, 1115, 1182, 1183, 1185, 1187,
    1231, 1270, 2951, 3807,
];
const LIMIT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((pick, value)) = data.split_first() else {
        return;
    };
    let (oid, value) = match OIDS.get(usize::from(*pick)) {
        Some(oid) => (*oid, value),
        None => match value.split_first_chunk::<4>() {
            Some((oid, rest)) => (u32::from_be_bytes(*oid), rest),
            None => return,
        },
    };
    if let Some(shown) = decode(oid, value, LIMIT) {
        assert!(
            shown.len() <= LIMIT + 4 * value.len() + 256,
            "{oid}: {} bytes shown for {} sent",
            shown.len(),
            value.len()
        );
    }
});
