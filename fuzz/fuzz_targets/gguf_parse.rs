//! `GgufHeader::parse` on arbitrary bytes: must return `Ok` or `Err`, never panic,
//! overflow, recurse without bound or allocate more than the input justifies.
//! On success, every tensor's data range and every metadata value is touched.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phiq::gguf::GgufHeader;

fuzz_target!(|data: &[u8]| {
    let header = match GgufHeader::parse(data) {
        Ok(h) => h,
        Err(e) => {
            // Rendering the error must not panic either.
            let _ = e.to_string();
            return;
        }
    };
    assert!(header.alignment.is_power_of_two());
    assert!(header.data_offset as usize <= data.len() || header.tensors.is_empty());
    let mut sum = 0u64;
    for t in &header.tensors {
        // In bounds by the parser's promise: a panic here is a bug found.
        let start = t.file_offset as usize;
        let bytes = &data[start..start + t.n_bytes as usize];
        sum = sum.wrapping_add(bytes.iter().map(|&b| u64::from(b)).sum::<u64>());
        assert_eq!(t.file_offset, header.data_offset + t.offset);
        assert_eq!(
            t.file_offset % header.alignment,
            header.data_offset % header.alignment
        );
        assert!(header.tensor(&t.name).is_some_and(|u| std::ptr::eq(u, t)));
        let _ = (t.n_elements(), t.row_len(), t.n_rows(), t.ty.name());
    }
    for (key, value) in &header.metadata {
        // The first occurrence of the key: keys are unique. (Not `==`: NaN != NaN.)
        assert!(header.get(key).is_some_and(|v| std::ptr::eq(v, value)));
        let _ = value.to_string();
        let _ = value.to_json(None).to_string();
        let _ = value.to_json(Some(16)).to_string();
        let _ = (
            value.as_u64(),
            value.as_i64(),
            value.as_f64(),
            value.as_bool(),
        );
        let _ = (
            header.get_uint(key),
            header.get_float(key),
            header.get_str(key),
        );
        let _ = header.get_array(key).map(|a| a.len());
    }
    let _ = header.architecture();
    std::hint::black_box(sum);
});
