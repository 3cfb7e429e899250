//! `libraflux convert nginx` output on real IPVS: a corpus configuration (checked by `nginx -t` on
//! the host) converted and applied; `ipvsadm-save -n` and the thresholds `ipvsadm -Ln` shows must
//! be what the converted YAML (libraflux/tests/fixtures/nginx/corpus/vm-apply/expected/) says.

use libraflux_tests::sorted_lines;

use super::support::{HEADER, Node, thresholds, workspace};

/// The table the converted files describe: web (wrr, a down backend at weight 0), dns (rr, UDP),
/// api6 (lc, IPv6), mysql (sh).
const CONVERTED_SAVED: &str = "\
-A -t 10.220.0.10:80 -s wrr
-a -t 10.220.0.10:80 -r 10.220.1.1:8080 -m -w 100
-a -t 10.220.0.10:80 -r 10.220.1.2:8080 -m -w 50
-a -t 10.220.0.10:80 -r 10.220.1.3:8080 -m -w 0
-A -u 10.220.0.10:53 -s rr
-a -u 10.220.0.10:53 -r 10.220.1.1:53 -m -w 1
-a -u 10.220.0.10:53 -r 10.220.1.2:53 -m -w 1
-A -t [fd00:220::10]:443 -s lc
-a -t [fd00:220::10]:443 -r [fd00:220:1::1]:8443 -m -w 1
-a -t [fd00:220::10]:443 -r [fd00:220:1::2]:8443 -m -w 1
-A -t 10.220.0.11:3306 -s sh
-a -t 10.220.0.11:3306 -r 10.220.1.4:3306 -m -w 1
-a -t 10.220.0.11:3306 -r 10.220.1.5:3306 -m -w 1
";

#[test]
fn a_converted_nginx_config_applies_to_exactly_the_table_its_yaml_describes() {
    let node = Node::new();
    node.netns.ip(&["addr", "add", "10.220.0.11/32", "dev", "lfvip0"]);
    node.netns.ip(&["addr", "add", "fd00:220::10/128", "dev", "lfvip0", "nodad"]);
    let input = workspace().join("libraflux/tests/fixtures/nginx/corpus/vm-apply/nginx.conf");
    let conf = node.dir.join("conf");
    let drop_ins = conf.join("config.d");
    let converted = node.libraflux(&[
        "convert",
        "nginx",
        "--input",
        &input.to_string_lossy(),
        "--output",
        &drop_ins.to_string_lossy(),
    ]);
    converted.assert_code(2);
    assert!(
        converted.stdout.contains("converted 4 services from 4 servers into 4 files"),
        "{}",
        converted.stdout
    );
    node.config("conf/config.yaml", HEADER);

    let applied = node.libraflux(&["apply", "-c", &conf.to_string_lossy()]);
    applied.assert_code(0);
    assert_eq!(node.saved(), sorted_lines(CONVERTED_SAVED));
    let web_limit = thresholds(&node.netns)
        .into_iter()
        .find(|(dest, _, _)| dest == "10.220.1.1:8080")
        .expect("the web backend with max_conns");
    assert_eq!(web_limit, ("10.220.1.1:8080".to_owned(), 1000, 0), "max_conns=1000 as the upper threshold");

    let again = node.libraflux(&["apply", "-c", &conf.to_string_lossy()]);
    again.assert_code(0);
    assert!(again.stdout.contains("No changes."), "{}", again.stdout);
}
