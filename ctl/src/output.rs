//! The one formatter every command prints through: human tables (the default), or the API's
//! reply messages as JSON or YAML.
//!
//! JSON and YAML follow the proto3 JSON mapping of `proto/spore/v1/control.proto` (lowerCamelCase
//! field names, enum value names, RFC 3339 timestamps, bytes as base64), produced by reflection
//! over the API's own descriptor set so they can never drift from the contract. Two deliberate
//! choices for scripts: fields with default values are included (a script can rely on
//! `.status.state` being there), and 64-bit integers are JSON numbers (proto3 JSON parsers accept
//! both numbers and strings).

use std::io::Write;
use std::sync::OnceLock;

use anyhow::{Context as _, Result};
use clap::ValueEnum;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use spore_api::v1;

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable tables and key/value lists.
    Table,
    /// The API reply as JSON (streams: one JSON object per line).
    Json,
    /// The API reply as YAML (streams: one YAML document per item).
    Yaml,
}

/// A generated API message whose full protobuf name is known, so it can be reflected.
pub trait ProtoMessage: prost::Message + Sized {
    const NAME: &'static str;
}

macro_rules! proto_messages {
    ($($name:ident),* $(,)?) => {
        $(impl ProtoMessage for v1::$name {
            const NAME: &'static str = concat!("spore.v1.", stringify!($name));
        })*
    };
}

proto_messages!(
    GetHostStatusResponse,
    CreateZoneResponse,
    DestroyZoneResponse,
    Zone,
    ListZonesResponse,
    Event,
    ReadZoneMetricsResponse,
    ReadZoneLogsResponse,
    UpdateZoneResourcesResponse,
    Image,
    ListImagesResponse,
    RemoveImageResponse,
    PruneImagesResponse,
    ListNetworkReservationsResponse,
);

/// Prints results in the chosen [`Format`].
#[derive(Clone, Copy, Debug)]
pub struct Output {
    format: Format,
}

impl Output {
    pub fn new(format: Format) -> Self {
        Output { format }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn is_table(&self) -> bool {
        self.format == Format::Table
    }

    /// Refuses `-o json|yaml` for a command whose output is a raw byte stream (a console, a
    /// script), rather than silently ignoring the flag.
    pub fn require_raw(&self, command: &str) -> Result<()> {
        if self.is_table() {
            return Ok(());
        }
        anyhow::bail!(
            "{command} prints a raw byte stream; -o {} does not apply to it",
            match self.format {
                Format::Json => "json",
                _ => "yaml",
            }
        )
    }

    /// Prints one reply: `human` renders it for [`Format::Table`]; JSON and YAML are derived
    /// from the message itself.
    pub fn print<M: ProtoMessage>(&self, msg: &M, human: impl FnOnce(&M) -> String) -> Result<()> {
        let text = self.render(msg, human)?;
        write_stdout(&text)
    }

    /// Renders one reply as [`Output::print`] would, without printing it.
    pub fn render<M: ProtoMessage>(
        &self,
        msg: &M,
        human: impl FnOnce(&M) -> String,
    ) -> Result<String> {
        let mut text = match self.format {
            Format::Table => human(msg),
            Format::Json => serde_json::to_string_pretty(&to_json(msg)?)?,
            Format::Yaml => serde_yaml::to_string(&to_json(msg)?)?,
        };
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        Ok(text)
    }

    /// Prints one item of a stream (events, metrics samples): a line of human text, a compact
    /// JSON object per line, or a YAML document.
    pub fn print_item<M: ProtoMessage>(
        &self,
        msg: &M,
        human: impl FnOnce(&M) -> String,
    ) -> Result<()> {
        let mut text = match self.format {
            Format::Table => human(msg),
            Format::Json => serde_json::to_string(&to_json(msg)?)?,
            Format::Yaml => format!("---\n{}", serde_yaml::to_string(&to_json(msg)?)?),
        };
        if !text.ends_with('\n') {
            text.push('\n');
        }
        write_stdout(&text)
    }
}

/// Writes and flushes, so that piped readers see each item as it happens. A closed pipe
/// (`sporectl zone watch | head`) ends the command quietly instead of panicking.
pub fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => crate::exit(0),
        other => other.context("cannot write to standard output"),
    }
}

fn pool() -> Result<&'static DescriptorPool> {
    static POOL: OnceLock<std::result::Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(spore_api::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| anyhow::anyhow!("the built-in API descriptor set is unreadable: {e}"))
}

/// The proto3 JSON form of an API message.
pub fn to_json<M: ProtoMessage>(msg: &M) -> Result<serde_json::Value> {
    let desc = pool()?
        .get_message_by_name(M::NAME)
        .with_context(|| format!("message {} is missing from the API descriptor set", M::NAME))?;
    let dynamic = DynamicMessage::decode(desc, msg.encode_to_vec().as_slice())
        .with_context(|| format!("cannot reflect message {}", M::NAME))?;
    let options = SerializeOptions::new()
        .skip_default_fields(false)
        .stringify_64_bit_integers(false);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .with_context(|| format!("cannot convert message {} to JSON", M::NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> v1::Zone {
        v1::Zone {
            id: "0b4f7c1e-8a8e-4f5e-9d54-3f0c8e3c2a11".into(),
            name: "web".into(),
            spec: Some(v1::ZoneSpec {
                image: "busybox".into(),
                cmd: Some(v1::StringList {
                    values: vec!["echo".into(), "hi".into()],
                }),
                memory_mib: Some(256),
                ..Default::default()
            }),
            status: Some(v1::ZoneStatus {
                state: v1::ZoneState::Exited as i32,
                exit: Some(v1::ExitStatus {
                    status: Some(v1::exit_status::Status::Code(7)),
                }),
                memory_mib: 256,
                created_at: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn json_follows_the_proto3_mapping() {
        let json = to_json(&zone()).unwrap();
        assert_eq!(json["name"], "web");
        assert_eq!(json["spec"]["cmd"]["values"][1], "hi");
        assert_eq!(json["status"]["state"], "ZONE_STATE_EXITED");
        assert_eq!(json["status"]["exit"]["code"], 7);
        assert_eq!(json["status"]["memoryMib"], 256);
        assert_eq!(json["status"]["createdAt"], "2023-11-14T22:13:20Z");
        // Defaults are present, so scripts need not guess.
        assert_eq!(json["status"]["reason"], "");
        assert_eq!(json["spec"]["tty"], false);
    }

    #[test]
    fn yaml_and_table_render() {
        let out = Output::new(Format::Yaml);
        let text = out.render(&zone(), |_| unreachable!()).unwrap();
        assert!(text.contains("state: ZONE_STATE_EXITED\n"), "{text}");
        let out = Output::new(Format::Table);
        let text = out.render(&zone(), |z| format!("zone {}", z.name)).unwrap();
        assert_eq!(text, "zone web\n");
    }

    #[test]
    fn every_printed_message_is_in_the_descriptor_set() {
        fn check<M: ProtoMessage + Default>() {
            to_json(&M::default()).unwrap_or_else(|e| panic!("{}: {e:#}", M::NAME));
        }
        check::<v1::GetHostStatusResponse>();
        check::<v1::CreateZoneResponse>();
        check::<v1::DestroyZoneResponse>();
        check::<v1::ListZonesResponse>();
        check::<v1::Event>();
        check::<v1::ReadZoneMetricsResponse>();
        check::<v1::UpdateZoneResourcesResponse>();
        check::<v1::Image>();
        check::<v1::ListImagesResponse>();
        check::<v1::RemoveImageResponse>();
        check::<v1::PruneImagesResponse>();
        check::<v1::ListNetworkReservationsResponse>();
    }
}
