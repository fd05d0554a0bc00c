"""Real `aws ec2 describe-security-groups` JSON, made by boto3 against
moto's EC2 (in process, no network): groups whose every free-text field
holds the strings given, each with rules of every peer kind.
Usage: moto_security_groups.py STRINGS.json > groups.json
STRINGS.json: a JSON list of strings; group i takes string i."""
import json
import sys

import boto3
from moto import mock_aws

strings = json.load(open(sys.argv[1]))

with mock_aws():
    ec2 = boto3.client("ec2", region_name="us-east-1")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    pl = ec2.create_managed_prefix_list(
        PrefixListName="pl", MaxEntries=5, AddressFamily="IPv4",
        Entries=[{"Cidr": "10.9.0.0/16", "Description": "entry"}])["PrefixList"]["PrefixListId"]
    ids = []
    for i, s in enumerate(strings):
        gid = ec2.create_security_group(
            GroupName=f"{s}", Description=s, VpcId=vpc)["GroupId"]
        ids.append(gid)
        perms = [
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
             "IpRanges": [{"CidrIp": f"10.{i}.0.0/16", "Description": s}],
             "Ipv6Ranges": [{"CidrIpv6": "2001:db8::/32", "Description": s}]},
            {"IpProtocol": "udp", "FromPort": 1000, "ToPort": 2000,
             "PrefixListIds": [{"PrefixListId": pl, "Description": s}]},
            {"IpProtocol": "-1",
             "UserIdGroupPairs": [{"GroupId": ids[0], "Description": s}]},
        ]
        ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=perms)
        ec2.authorize_security_group_egress(GroupId=gid, IpPermissions=[
            {"IpProtocol": "icmp", "FromPort": 8, "ToPort": -1,
             "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": s}]}])
    out = ec2.describe_security_groups(GroupIds=ids)
    out.pop("ResponseMetadata", None)
    json.dump(out, sys.stdout, indent=4)
