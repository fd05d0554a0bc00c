"""VPC Flow Log lines, parsed by flowlogs-reader (a published parser of
AWS VPC Flow Logs records, sgctl shares no code with it), as JSON lines.
Usage: flowlog_records.py [EXTRA-FIELD...] < lines
Each line is split into the 14 default version-2 fields, then EXTRA-FIELD
(flowlogs-reader's names, e.g. flow_direction tcp_flags type)."""
import calendar
import json
import sys

from flowlogs_reader import FlowRecord
from flowlogs_reader.flowlogs_reader import DEFAULT_FIELDS

fields = DEFAULT_FIELDS + tuple(sys.argv[1:])
for line in sys.stdin:
    line = line.rstrip("\n")
    if not line:
        continue
    record = FlowRecord.from_cwl_event({"message": line}, fields)
    d = record.to_dict()
    for k in ("start", "end"):
        if d.get(k) is not None:
            d[k] = calendar.timegm(d[k].timetuple())
    print(json.dumps(d))
