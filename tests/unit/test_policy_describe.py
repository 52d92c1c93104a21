"""policies.describe: the one-line rule the status page shows as "why kept"."""
from traceo_sampler import config
from traceo_sampler.policies import describe


def _policies(tmp_path, body):
    p = tmp_path / "c.yaml"
    p.write_text("sampler:\n  policies:\n" + body)
    return config.load(str(p)).sampler.policies


def test_every_set_field_of_the_block_is_named(tmp_path):
    pols = _policies(tmp_path, """\
    - {name: e, type: status_code, status_code: {status_codes: [ERROR]}}
    - {name: s, type: latency, latency: {threshold_ms: 1000}}
    - {name: r, type: probabilistic, probabilistic: {sampling_percentage: 10}}
    - {name: k, type: string_attribute, string_attribute: {key: http.route, values: [/pay, /cart]}}
    - name: both
      type: and
      and:
        and_sub_policy:
          - {name: a, type: latency, latency: {threshold_ms: 5}}
          - {name: b, type: status_code, status_code: {status_codes: [ERROR]}}
""")
    d = [describe(p) for p in pols]
    assert d[0] == 'status_code: status_codes=["ERROR"]'
    assert d[1] == "latency: threshold_ms=1000"
    assert d[2] == "probabilistic: sampling_percentage=10.0"
    assert d[3].startswith("string_attribute: key=http.route, values=") and "/cart" in d[3]
    assert d[4].startswith("and: and_sub_policy=") and "threshold_ms" in d[4]
    assert all(len(x) <= 160 for x in d)


def test_a_block_left_out_says_the_type(tmp_path):
    pols = _policies(tmp_path, "    - {name: all, type: always_sample}\n")
    assert describe(pols[0]) == "always_sample"
