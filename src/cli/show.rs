//! `haconn show ...`: what the daemon knows.

use serde_json::json;

use super::{Outcome, SocketArg};
use crate::daemon::client::{ClientError, request};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
    #[command(flatten)]
    pub socket: SocketArg,
    /// Print the daemon's JSON answer as is.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// The daemon: where it started from, the last reload, what it manages.
    Status,
    /// The live spec (secrets masked).
    Settings,
}

pub fn run(args: &Args) -> Outcome {
    let op = match args.what {
        What::Status => "status",
        What::Settings => "get",
    };
    let reply = match request(&args.socket.control_socket, json!({"op": op})) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("haconn show: {e}");
            return match e {
                ClientError::Unreachable { .. } => Outcome::Trouble,
                _ => Outcome::Failed,
            };
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&reply).expect("json serializes")
        );
        return Outcome::Ok;
    }
    match args.what {
        What::Settings => print!("{}", reply["spec"].as_str().unwrap_or("")),
        What::Status => {
            let s = &reply["status"];
            let l = &reply["live"];
            println!(
                "management server : {}",
                s["localManagementServer"].as_str().unwrap_or("?")
            );
            println!(
                "spec file         : {}",
                s["specFile"].as_str().unwrap_or("?")
            );
            println!(
                "started from      : {}",
                s["startedFrom"].as_str().unwrap_or("?")
            );
            if let Some(d) = s["degraded"].as_str() {
                println!("DEGRADED          : {d}");
            }
            println!("watching          : {}", s["watching"]);
            println!(
                "managing          : {} servers, {} systems, {} PDUs",
                l["servers"], l["systems"], l["pdus"]
            );
            println!("reloads           : {}", s["reloads"]);
            match s["lastReload"].as_object() {
                Some(r) => println!(
                    "last reload       : {} ({}, {} changes) at {}",
                    if r["success"] == true {
                        "completed"
                    } else {
                        "failed"
                    },
                    r["origin"].as_str().unwrap_or("?"),
                    r["changes"],
                    r["at"].as_str().unwrap_or("?"),
                ),
                None => println!("last reload       : none"),
            }
            if let Some(i) = s["lastInvalid"].as_str() {
                println!("last refused spec :\n{i}");
            }
        }
    }
    Outcome::Ok
}
