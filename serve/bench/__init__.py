"""``stitch bench``: an open-loop HTTP load generator for Stitch, and synthetic adapters to load it with.

Modules, from the workload out:

* ``workload``   seeded adapter popularity (Zipf, power law, uniform), arrival processes
                 (Poisson, gamma with a given CV), synthetic inputs, the request schedule;
* ``client``     one HTTP request per task (classify, embed, streamed generate), timed;
                 the loopback guard; the server's adapter list;
* ``loadgen``    the open-loop runner: requests leave on schedule whether or not earlier
                 ones returned; /metrics scraped before and after; optional RSS sampling;
* ``promtext``   the adapter cache counters from the server's Prometheus text;
* ``rss``        resident memory of local server processes (psutil);
* ``report``     percentiles, throughput, errors, SLO attainment -> result.json, summary.md;
* ``plots``      latency CDF, throughput and latency over time, sweep curves (matplotlib Agg);
* ``sweep``      rates up to saturation; the highest rate that meets the SLO;
* ``synthetic``  N random adapters of several methods for any base, written fast;
* ``cli``        the ``stitch bench http | sweep | make-adapters`` subcommands.
"""
