//! A recorded request or response body, stored compactly on SQLite: compressed with zstd against
//! a built-in dictionary of JSON-RPC and MCP framing, so that a small call's bodies take less than
//! half of their text (a body that would not shrink is stored as text). PostgreSQL stores the text
//! (it compresses large values itself). Rows written as text, or with an earlier dictionary, stay
//! readable.

use std::borrow::Cow;
use std::cell::RefCell;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Decode, Encode, Postgres, Sqlite, Type, TypeInfo, ValueRef};

/// Borrowed to be written (no copy of the body), owned when read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompactBody<'a>(pub Cow<'a, str>);

/// What most bodies are made of: the framing the dictionaries are made from, and format 1's
/// dictionary as it is. A stored dictionary never changes (stored bodies would become
/// unreadable): a new one gets a new format byte, and the old ones stay to read the old rows.
const FRAMING: &[u8] = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"roots":{"listChanged":true},"sampling":{},"elicitation":{}},"clientInfo":{"name":"","version":""}}}
{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{"listChanged":true},"resources":{},"prompts":{},"logging":{}},"serverInfo":{"name":"","version":""},"instructions":""}}
{"jsonrpc":"2.0","method":"notifications/initialized"}{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1,"total":1}}
{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"","description":"","inputSchema":{"type":"object","properties":{},"required":[]}}]}}
{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":""}}{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":""}}
{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":""}}{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"Invalid params"}}
{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":""}],"isError":true}}
id: 0/1
retry: 3000

data: 
event: message
data: {"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":""}],"structuredContent":{}}}

{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"","arguments":{"text":"","query":"","limit":10},"_meta":{"progressToken":1}}}"#;

/// What the 2026-07-28 revision adds to most bodies: each request's `_meta`, each result's
/// `resultType`, caching hints, and the multi round-trip answer (format 3's dictionary is made
/// from it and `FRAMING`; only that tool reads it).
#[cfg(test)]
const MODERN_FRAMING: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"","arguments":{"text":""},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}
{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"","arguments":{"query":"","limit":10},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{"form":{},"url":{}},"sampling":{},"roots":{"listChanged":true}},"io.modelcontextprotocol/clientInfo":{"name":"","version":""},"progressToken":1}}}
{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{}},"io.modelcontextprotocol/clientInfo":{"name":"","version":""},"io.modelcontextprotocol/logLevel":"info"}}}
{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}
{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete","content":[{"type":"text","text":""}]}}
{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete","content":[{"type":"text","text":""}],"structuredContent":{},"isError":false}}
{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete","tools":[{"name":"","description":"","inputSchema":{"type":"object","properties":{},"required":[]}}],"ttlMs":60000,"cacheScope":"private"}}
{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","inputRequests":{"upstream":{"method":"elicitation/create","params":{"mode":"url","url":"","message":""}}},"requestState":""}}
{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete","supportedVersions":["2026-07-28","2025-11-25","2025-06-18"],"capabilities":{"tools":{"listChanged":true}},"serverInfo":{"name":"","version":""}}}
{"jsonrpc":"2.0","id":1,"error":{"code":-32020,"message":"Mcp-Method header value '' does not match body value ''"}}"#;

/// Format 2's dictionary: zstd's trainer over variations of `FRAMING` (`make_a_dictionary` below),
/// so that it carries entropy tables as well: compressing takes half the time of format 1's plain
/// content, and bodies come out a little smaller.
const TRAINED_2: &[u8] = include_bytes!("body-dictionary-2.zdict");
/// Format 3's: the same over `FRAMING` and `MODERN_FRAMING`, for the bodies of both eras.
const TRAINED_3: &[u8] = include_bytes!("body-dictionary-3.zdict");

/// The first byte of a compressed body: which dictionary it was made with. Bodies are written
/// with `FORMAT`; formats 1 (`FRAMING` as plain content) and 2 are still read.
const FORMAT: u8 = 3;
const LEVEL: i32 = 3;
/// Bodies are cut at `gateway::record::BODY_LIMIT` before they are stored; this leaves room.
const MAX_BODY: usize = 1024 * 1024;

thread_local! {
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSORS: RefCell<[Option<zstd::bulk::Decompressor<'static>>; 3]> = const { RefCell::new([None, None, None]) };
}

impl<'a> CompactBody<'a> {
    pub fn borrowed(text: &'a str) -> CompactBody<'a> {
        CompactBody(Cow::Borrowed(text))
    }

    /// The compressed form, or `None` when it is no smaller than the text.
    fn packed(&self) -> Option<Vec<u8>> {
        let mut packed = COMPRESSOR.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.is_none() {
                *cell = compressor().ok();
            }
            cell.as_mut()?.compress(self.0.as_bytes()).ok()
        })?;
        // Within the capacity zstd's bound left: no copy to another buffer.
        packed.insert(0, FORMAT);
        (packed.len() < self.0.len()).then_some(packed)
    }

    fn unpacked(bytes: &[u8]) -> Result<CompactBody<'static>, BoxDynError> {
        let (format, compressed) = match bytes.split_first() {
            Some((&format @ 1..=FORMAT, compressed)) => (format, compressed),
            _ => return Err("a stored body of an unknown format".into()),
        };
        let text = DECOMPRESSORS.with(|cell| {
            let mut cell = cell.borrow_mut();
            let slot = &mut cell[usize::from(format - 1)];
            if slot.is_none() {
                *slot = Some(zstd::bulk::Decompressor::with_dictionary(dictionary(format))?);
            }
            slot.as_mut().expect("just made").decompress(compressed, MAX_BODY)
        })?;
        Ok(CompactBody(Cow::Owned(String::from_utf8(text)?)))
    }
}

fn dictionary(format: u8) -> &'static [u8] {
    match format {
        1 => FRAMING,
        2 => TRAINED_2,
        _ => TRAINED_3,
    }
}

/// Writes `FORMAT`: the dictionary's id is left out of each body (the format byte says it).
fn compressor() -> std::io::Result<zstd::bulk::Compressor<'static>> {
    let mut compressor = zstd::bulk::Compressor::with_dictionary(LEVEL, dictionary(FORMAT))?;
    compressor.set_parameter(zstd::zstd_safe::CParameter::DictIdFlag(false))?;
    Ok(compressor)
}

impl serde::Serialize for CompactBody<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl Type<Sqlite> for CompactBody<'_> {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <Vec<u8> as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &sqlx::sqlite::SqliteTypeInfo) -> bool {
        <Vec<u8> as Type<Sqlite>>::compatible(ty) || <String as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for CompactBody<'_> {
    fn encode_by_ref(
        &self,
        buf: &mut <Sqlite as sqlx::Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        match self.packed() {
            Some(packed) => <Vec<u8> as Encode<Sqlite>>::encode(packed, buf),
            None => <String as Encode<Sqlite>>::encode(self.0.clone().into_owned(), buf),
        }
    }
}

impl<'r> Decode<'r, Sqlite> for CompactBody<'static> {
    fn decode(value: sqlx::sqlite::SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        if value.type_info().name() == "BLOB" {
            let bytes = <&[u8] as Decode<Sqlite>>::decode(value)?;
            CompactBody::unpacked(bytes)
        } else {
            <String as Decode<Sqlite>>::decode(value).map(|text| CompactBody(Cow::Owned(text)))
        }
    }
}

impl Type<Postgres> for CompactBody<'_> {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <String as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <String as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for CompactBody<'_> {
    fn encode_by_ref(&self, buf: &mut sqlx::postgres::PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <&str as Encode<Postgres>>::encode(self.0.as_ref(), buf)
    }
}

impl<'r> Decode<'r, Postgres> for CompactBody<'static> {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, BoxDynError> {
        <String as Decode<Postgres>>::decode(value).map(|text| CompactBody(Cow::Owned(text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_json_rpc_bodies_of_both_eras_shrink_and_come_back_whole() {
        let request = r#"{"jsonrpc":"2.0","id":17,"method":"tools/call","params":{"name":"echo","arguments":{"text":"bench"}}}"#;
        let body = CompactBody::borrowed(request);
        let packed = body.packed().expect("it shrinks");
        assert_eq!(packed[0], 3);
        assert!(packed.len() * 2 < request.len(), "{} of {}", packed.len(), request.len());
        assert_eq!(CompactBody::unpacked(&packed).unwrap(), body);
        // A 2026-07-28 request, with the `_meta` each one carries, to less than a quarter.
        let modern = r#"{"jsonrpc":"2.0","id":17,"method":"tools/call","params":{"name":"echo","arguments":{"text":"bench"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
        let packed = CompactBody::borrowed(modern).packed().expect("it shrinks");
        assert!(packed.len() * 4 < modern.len(), "{} of {}", packed.len(), modern.len());
        assert_eq!(CompactBody::unpacked(&packed).unwrap().0, modern);
        let big = CompactBody("é".repeat(10_000).into());
        assert_eq!(CompactBody::unpacked(&big.packed().unwrap()).unwrap(), big);
    }

    #[test]
    fn bodies_written_with_the_second_dictionary_still_read() {
        let text = r#"{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"3 results"}]}}"#;
        let mut compressor = zstd::bulk::Compressor::with_dictionary(LEVEL, TRAINED_2).unwrap();
        compressor.set_parameter(zstd::zstd_safe::CParameter::DictIdFlag(false)).unwrap();
        let mut stored = vec![2];
        stored.extend(compressor.compress(text.as_bytes()).unwrap());
        assert_eq!(CompactBody::unpacked(&stored).unwrap().0, text);
    }

    #[test]
    fn bodies_written_with_the_first_dictionary_still_read() {
        let text = r#"{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"3 results"}]}}"#;
        let mut stored = vec![1];
        stored.extend(
            zstd::bulk::Compressor::with_dictionary(3, FRAMING).unwrap().compress(text.as_bytes()).unwrap(),
        );
        assert_eq!(CompactBody::unpacked(&stored).unwrap().0, text);
        // The same bytes under the other format's dictionary are not taken for a body.
        stored[0] = 2;
        assert_ne!(CompactBody::unpacked(&stored).ok().map(|b| b.0.into_owned()), Some(text.to_owned()));
    }

    #[test]
    fn stored_dictionaries_never_change() {
        assert_eq!(crc32fast::hash(FRAMING), 0x61d1_0a86, "format 1's dictionary changed");
        assert_eq!(crc32fast::hash(TRAINED_2), 0xf62e_350a, "format 2's dictionary changed");
        assert_eq!(crc32fast::hash(TRAINED_3), 0xb98b_7782, "format 3's dictionary changed");
    }

    #[test]
    fn a_body_that_does_not_shrink_stays_text_and_garbage_is_an_error() {
        assert!(CompactBody::borrowed("x").packed().is_none());
        assert!(CompactBody::unpacked(&[9, 1, 2]).is_err());
        assert!(CompactBody::unpacked(&[FORMAT, 1, 2, 3]).is_err());
        assert!(CompactBody::unpacked(&[1, 1, 2, 3]).is_err());
        assert!(CompactBody::unpacked(&[]).is_err());
    }

    /// Makes a new dictionary from variations of `FRAMING` and `MODERN_FRAMING` (ids, names,
    /// texts and numbers changed), written to `target/body-dictionary.zdict`. A new dictionary
    /// gets a new format.
    #[test]
    #[ignore = "a tool: run it to make a new dictionary"]
    fn make_a_dictionary() {
        const WORDS: [&str; 16] = [
            "alpha",
            "issue",
            "query",
            "repo",
            "main",
            "open",
            "bug",
            "file",
            "page",
            "user",
            "ticket",
            "42",
            "2025",
            "hello world",
            "search",
            "list",
        ];
        let mut samples = Vec::new();
        let mut filler = 0;
        for n in 0..400usize {
            for template in [FRAMING, MODERN_FRAMING].iter().flat_map(|lines| lines.split(|&b| b == b'\n')) {
                let mut sample = String::from_utf8(template.to_vec())
                    .unwrap()
                    .replace("\"id\":0", &format!("\"id\":{}", n * 37 % 100_000))
                    .replace("\"id\":1", &format!("\"id\":{}", n * 13 % 1000))
                    .replace("\"limit\":10", &format!("\"limit\":{}", n % 100));
                while let Some(at) = sample.find("\"\"") {
                    filler += 1;
                    let text = format!("\"{} {}\"", WORDS[filler % 16], WORDS[(filler * 7 + n) % 16]);
                    sample.replace_range(at..at + 2, &text);
                }
                samples.push(sample);
            }
        }
        let sizes: Vec<usize> = samples.iter().map(String::len).collect();
        let dictionary = zstd::dict::from_continuous(samples.concat().as_bytes(), &sizes, 4096).unwrap();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/body-dictionary.zdict");
        std::fs::write(path, &dictionary).unwrap();
        println!("{} bytes written to {path}", dictionary.len());
    }
}
