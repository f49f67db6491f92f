import { describe, expect, it } from "vitest";
import { cachedRuns, STACKS, T } from "./harness.js";

const run = cachedRuns();

describe.each(STACKS)("%s stack: network", (stack) => {
  it("is a custom-mode VPC: no automatic subnets in every region", async () => {
    const r = await run(stack);
    expect(r.one(T.network).inputs.autoCreateSubnetworks).toBe(false);
  });

  it("Cloud Run egresses through one subnet of that VPC, in the service's region, with the configured range", async () => {
    const r = await run(stack);
    const subnet = r.ofType(T.subnetwork).find((s) => s.name.endsWith("-run-egress"))!;
    const vpc = r.one(T.network);
    expect(subnet.dependencies).toContain(vpc.urn);
    expect(subnet.inputs.region).toBe(r.config["chat-gateway:region"]);
    expect(subnet.inputs.ipCidrRange).toBe(r.config["chat-gateway:subnetCidr"] ?? "10.8.0.0/24");
    expect(subnet.inputs.privateIpGoogleAccess).toBe(true);
    const run_ = r.one(T.run);
    const nic = run_.inputs.template.vpcAccess.networkInterfaces[0];
    expect(nic.subnetwork).toContain(subnet.name);
    expect(nic.network).toContain(vpc.name);
  });

  it("reserves a private services access range and peers it with servicenetworking for Memorystore", async () => {
    const r = await run(stack);
    const range = r.ofType(T.globalAddress).find((a) => a.inputs.purpose === "VPC_PEERING");
    expect(range?.inputs).toMatchObject({ addressType: "INTERNAL", prefixLength: 24 });
    const psa = r.one(T.psa);
    expect(psa.inputs.service).toBe("servicenetworking.googleapis.com");
    expect(psa.inputs.reservedPeeringRanges).toEqual([range?.state.name]);
    expect(psa.dependencies).toContain(range?.urn);
    // Destroying the stack must not hang on a peering Google still uses.
    expect(psa.inputs.deletionPolicy).toBe("ABANDON");
  });

  it("opens nothing: no firewall rule, no router or NAT, and the only external address is the load balancer's", async () => {
    const r = await run(stack);
    expect(r.resources.filter((x) => /compute\/(firewall|router|routerNat|instance):/.test(x.type))).toEqual([]);
    const external = r.ofType(T.globalAddress).filter((a) => a.inputs.addressType !== "INTERNAL");
    expect(external.map((a) => a.name)).toEqual(["chat-gateway-ip"]);
  });
});
