//! `sporectl network reservations`: the addresses spored reserved for zones.

use anyhow::Result;
use clap::Args;
use spore_api::v1;

use crate::context::Ctx;
use crate::human;

#[derive(Debug, Args)]
pub struct ReservationsArgs {}

impl ReservationsArgs {
    pub async fn run(self, ctx: &Ctx) -> Result<i32> {
        let mut client = ctx.client().await?;
        let reply = ctx
            .call(client.list_network_reservations(v1::ListNetworkReservationsRequest {}))
            .await?;
        ctx.out.print(&reply, render)?;
        Ok(0)
    }
}

fn render(reply: &v1::ListNetworkReservationsResponse) -> String {
    let mut table = human::table(["ZONE", "IPV4", "IPV6", "MAC", "GATEWAY"]);
    for r in &reply.reservations {
        let gateway = [r.gateway_ipv4.as_str(), r.gateway_ipv6.as_str()]
            .iter()
            .filter(|g| !g.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        table.add_row(vec![
            human::short_id(&r.zone_id).to_string(),
            r.ipv4.clone(),
            r.ipv6.clone(),
            r.mac.clone(),
            gateway,
        ]);
    }
    human::render_table(&table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_reservation() {
        let reply = v1::ListNetworkReservationsResponse {
            reservations: vec![v1::NetworkReservation {
                zone_id: "0b4f7c1e-8a8e-4f5e-9d54-3f0c8e3c2a11".into(),
                ipv4: "10.75.0.2/16".into(),
                ipv6: "fdd4::2/48".into(),
                mac: "02:00:00:00:00:02".into(),
                gateway_ipv4: "10.75.0.1".into(),
                gateway_ipv6: "fdd4::1".into(),
            }],
        };
        let text = render(&reply);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[1].starts_with("0b4f7c1e-8a8   10.75.0.2/16"),
            "{text}"
        );
        assert!(lines[1].ends_with("10.75.0.1 fdd4::1"), "{text}");
    }
}
