//! A recorded request or response body, stored compactly on SQLite: compressed with zstd against
//! a built-in dictionary of JSON-RPC and MCP framing, so that a small call's bodies take a third
//! of their text (a body that would not shrink is stored as text). PostgreSQL stores the text
//! (it compresses large values itself). Rows written as text before stay readable.

use std::borrow::Cow;
use std::cell::RefCell;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Decode, Encode, Postgres, Sqlite, Type, TypeInfo, ValueRef};

/// Borrowed to be written (no copy of the body), owned when read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompactBody<'a>(pub Cow<'a, str>);

/// What most bodies are made of. Changing it would make stored bodies unreadable: a new
/// dictionary gets a new `FORMAT` byte, and the old one stays to read the old rows.
const DICTIONARY: &[u8] = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"roots":{"listChanged":true},"sampling":{},"elicitation":{}},"clientInfo":{"name":"","version":""}}}
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

/// The first byte of a compressed body: which dictionary it was made with.
const FORMAT: u8 = 1;
const LEVEL: i32 = 3;
/// Bodies are cut at `gateway::record::BODY_LIMIT` before they are stored; this leaves room.
const MAX_BODY: usize = 1024 * 1024;

thread_local! {
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

impl<'a> CompactBody<'a> {
    pub fn borrowed(text: &'a str) -> CompactBody<'a> {
        CompactBody(Cow::Borrowed(text))
    }

    /// The compressed form, or `None` when it is no smaller than the text.
    fn packed(&self) -> Option<Vec<u8>> {
        let compressed = COMPRESSOR.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.is_none() {
                *cell = zstd::bulk::Compressor::with_dictionary(LEVEL, DICTIONARY).ok();
            }
            cell.as_mut()?.compress(self.0.as_bytes()).ok()
        })?;
        (compressed.len() + 1 < self.0.len()).then(|| {
            let mut packed = Vec::with_capacity(compressed.len() + 1);
            packed.push(FORMAT);
            packed.extend_from_slice(&compressed);
            packed
        })
    }

    fn unpacked(bytes: &[u8]) -> Result<CompactBody<'static>, BoxDynError> {
        let Some((&FORMAT, compressed)) = bytes.split_first() else {
            return Err("a stored body of an unknown format".into());
        };
        let text = DECOMPRESSOR.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.is_none() {
                *cell = Some(zstd::bulk::Decompressor::with_dictionary(DICTIONARY)?);
            }
            let decompressor = cell.as_mut().expect("just made");
            decompressor.decompress(compressed, MAX_BODY)
        })?;
        Ok(CompactBody(Cow::Owned(String::from_utf8(text)?)))
    }
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
    fn small_json_rpc_bodies_shrink_to_a_third_and_come_back_whole() {
        let request = r#"{"jsonrpc":"2.0","id":17,"method":"tools/call","params":{"name":"echo","arguments":{"text":"bench"}}}"#;
        let body = CompactBody::borrowed(request);
        let packed = body.packed().expect("it shrinks");
        assert!(packed.len() * 2 < request.len(), "{} of {}", packed.len(), request.len());
        assert_eq!(CompactBody::unpacked(&packed).unwrap(), body);
        let big = CompactBody("é".repeat(10_000).into());
        assert_eq!(CompactBody::unpacked(&big.packed().unwrap()).unwrap(), big);
    }

    #[test]
    fn a_body_that_does_not_shrink_stays_text_and_garbage_is_an_error() {
        assert!(CompactBody::borrowed("x").packed().is_none());
        assert!(CompactBody::unpacked(&[9, 1, 2]).is_err());
        assert!(CompactBody::unpacked(&[FORMAT, 1, 2, 3]).is_err());
        assert!(CompactBody::unpacked(&[]).is_err());
    }
}
