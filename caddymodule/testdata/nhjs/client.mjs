// Runs the official Azure Notification Hubs JavaScript client
// (@azure/notification-hubs, pinned in package.json) against pushgate_nh.
// caddymodule's TestOfficialJSClient starts Caddy and runs this script.
//
//	node client.mjs <connection string> <hub> [scenario]
//
// The arguments may instead come from NH_CONNECTION_STRING, NH_HUB and
// NH_SCENARIO. The scenario is "all" (the default). NODE_EXTRA_CA_CERTS
// must trust the server's certificate: the client speaks HTTPS only.
//
// Each step prints one JSON line, {"step":…, …what came back}. The first
// unexpected result prints {"step":…,"error":…} and exits 1.

import {
  NotificationHubsClient,
  createAppleInstallation,
  createFcmV1Installation,
  createAppleRegistrationDescription,
  createAppleNotification,
  createTemplateNotification,
} from "@azure/notification-hubs";

const connectionString = process.argv[2] || process.env.NH_CONNECTION_STRING;
const hubName = process.argv[3] || process.env.NH_HUB;
const scenario = process.argv[4] || process.env.NH_SCENARIO || "all";
if (!connectionString || !hubName) {
  console.error("usage: node client.mjs <connection string> <hub> [scenario]");
  process.exit(2);
}
if (scenario !== "all") {
  console.error(`unknown scenario ${JSON.stringify(scenario)} (want all)`);
  process.exit(2);
}

const client = new NotificationHubsClient(connectionString, hubName);

// Device handles. The APNs token is upper-case hex, as the client's
// channel filter would send it.
const appleToken = "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF";
const fcmToken = "fcm-js-token-1:APA91bJSclient";
const regToken = "A0B1C2D3E4F5A6B7C8D9E0F1A2B3C4D5E6F7A8B9C0D1E2F3A4B5C6D7E8F9A0B1";

function fail(step, message) {
  const e = new Error(message);
  e.step = step;
  throw e;
}

function expect(step, cond, message) {
  if (!cond) fail(step, message);
}

let current = "";
function print(step, fields) {
  console.log(JSON.stringify({ step, ...fields }));
}

async function step(name, fn) {
  current = name;
  const out = await fn();
  print(name, out ?? {});
  return out;
}

function regFields(r) {
  return {
    kind: r.kind,
    registrationId: r.registrationId,
    etag: r.etag,
    tags: r.tags,
    deviceToken: r.deviceToken,
    expirationTime: r.expirationTime instanceof Date ? r.expirationTime.toISOString() : r.expirationTime,
  };
}

function sleep(ms) {
  return new Promise((res) => setTimeout(res, ms));
}

async function main() {
  // --- installations ---
  await step("createOrUpdateInstallation.apple", async () => {
    const r = await client.createOrUpdateInstallation(
      createAppleInstallation({
        installationId: "js-apple-1",
        pushChannel: appleToken,
        tags: ["js_news", "js_apple"],
        templates: { t1: { body: '{"aps":{"alert":"$(message)"}}', headers: {}, tags: ["js_tpl"] } },
      }),
    );
    return { correlationId: r.correlationId ?? null, trackingId: r.trackingId ?? null };
  });
  await step("createOrUpdateInstallation.fcmv1", async () => {
    const r = await client.createOrUpdateInstallation(
      createFcmV1Installation({
        installationId: "js-fcm-1",
        pushChannel: fcmToken,
        tags: ["js_news", "js_fcm"],
        templates: { t1: { body: '{"message":{"notification":{"body":"$(message)"}}}' } },
      }),
    );
    return { trackingId: r.trackingId ?? null };
  });
  await step("getInstallation", async () => {
    const i = await client.getInstallation("js-apple-1");
    expect("getInstallation", i.installationId === "js-apple-1", `installationId ${i.installationId}`);
    return {
      installationId: i.installationId,
      platform: i.platform,
      pushChannel: i.pushChannel,
      tags: i.tags,
      templates: i.templates,
    };
  });
  await step("updateInstallation", async () => {
    await client.updateInstallation("js-apple-1", [{ op: "add", path: "/tags", value: "js_patched" }]);
    const i = await client.getInstallation("js-apple-1");
    expect("updateInstallation", (i.tags || []).includes("js_patched"), `tags after the patch: ${JSON.stringify(i.tags)}`);
    return { tags: i.tags };
  });

  // --- registrations ---
  const regId = await step("createRegistrationId", async () => {
    const id = await client.createRegistrationId();
    expect("createRegistrationId", typeof id === "string" && id.length > 0, `id ${JSON.stringify(id)}`);
    return { registrationId: id };
  }).then((o) => o.registrationId);

  let reg = await step("createOrUpdateRegistration", async () => {
    const r = await client.createOrUpdateRegistration(
      createAppleRegistrationDescription({ registrationId: regId, deviceToken: regToken, tags: ["js_reg", "js_news"] }),
    );
    expect("createOrUpdateRegistration", r.registrationId === regId, `registrationId ${r.registrationId}, want ${regId}`);
    return regFields(r);
  });
  reg = await step("getRegistration", async () => {
    const r = await client.getRegistration(regId);
    expect("getRegistration", r.registrationId === regId && r.kind === "Apple", `got ${r.kind} ${r.registrationId}`);
    return regFields(r);
  });
  await step("listRegistrationsByTag", async () => {
    const ids = [];
    let pages = 0;
    // js_news is on the registration and on both installations: with
    // top=1 the client must follow x-ms-continuationtoken.
    for await (const page of client.listRegistrationsByTag("js_news", { top: 1 }).byPage()) {
      pages++;
      for (const r of page) ids.push(r.registrationId);
      expect("listRegistrationsByTag", pages < 50, "more than 50 pages");
    }
    expect("listRegistrationsByTag", ids.includes(regId), `ids ${JSON.stringify(ids)} lack ${regId}`);
    return { registrationIds: ids, pages };
  });
  await step("updateRegistration", async () => {
    const r = await client.updateRegistration(
      createAppleRegistrationDescription({
        registrationId: regId,
        etag: reg.etag,
        deviceToken: regToken,
        tags: ["js_reg", "js_news", "js_updated"],
      }),
    );
    expect("updateRegistration", r.etag !== reg.etag, `etag still ${r.etag}`);
    return { ...regFields(r), previousEtag: reg.etag };
  });
  await step("updateRegistration.staleEtag", async () => {
    try {
      await client.updateRegistration(
        createAppleRegistrationDescription({ registrationId: regId, etag: reg.etag, deviceToken: regToken, tags: ["js_stale"] }),
      );
    } catch (e) {
      expect("updateRegistration.staleEtag", e.statusCode === 412, `status ${e.statusCode}: ${e.message}`);
      return { statusCode: e.statusCode };
    }
    return fail("updateRegistration.staleEtag", "an update with a stale etag succeeded");
  });

  // --- sends ---
  await step("sendNotification.template", async () => {
    const r = await client.sendNotification(createTemplateNotification({ body: { message: "hello template" } }), {
      tagExpression: "js_news && !js_nobody",
    });
    expect("sendNotification.template", typeof r.notificationId === "string" && r.notificationId !== "", `notificationId ${r.notificationId}`);
    return { notificationId: r.notificationId, state: r.state, trackingId: r.trackingId ?? null };
  });
  const appleSend = await step("sendNotification.apple", async () => {
    const r = await client.sendNotification(
      createAppleNotification({ body: { aps: { alert: "hello apple" } }, headers: { "apns-priority": "10" } }),
      { tagExpression: "js_apple || js_reg" },
    );
    expect("sendNotification.apple", typeof r.notificationId === "string" && r.notificationId !== "", `notificationId ${r.notificationId}`);
    return { notificationId: r.notificationId, state: r.state };
  });
  await step("sendNotification.test", async () => {
    const r = await client.sendNotification(createTemplateNotification({ body: { message: "hello test" } }), {
      tagExpression: "js_news",
      enableTestSend: true,
    });
    expect("sendNotification.test", r.state === "DetailedStateAvailable", `state ${r.state}`);
    return {
      state: r.state,
      successCount: r.successCount,
      failureCount: r.failureCount,
      results: (r.results || []).map((x) => ({
        applicationPlatform: x.applicationPlatform,
        pnsHandle: x.pnsHandle,
        registrationId: x.registrationId,
        outcome: x.outcome,
      })),
    };
  });
  const scheduled = await step("scheduleNotification", async () => {
    const at = new Date(Date.now() + 3600 * 1000);
    const r = await client.scheduleNotification(at, createTemplateNotification({ body: { message: "later" } }), {
      tagExpression: "js_news",
    });
    expect("scheduleNotification", typeof r.notificationId === "string" && r.notificationId !== "", `notificationId ${r.notificationId}`);
    return { notificationId: r.notificationId, state: r.state };
  });
  await step("cancelScheduledNotification", async () => {
    const r = await client.cancelScheduledNotification(scheduled.notificationId);
    return { trackingId: r.trackingId ?? null };
  });
  await step("getNotificationOutcomeDetails", async () => {
    const deadline = Date.now() + 20000;
    let polls = 0;
    for (;;) {
      polls++;
      let d;
      try {
        d = await client.getNotificationOutcomeDetails(appleSend.notificationId);
      } catch (e) {
        if (e.statusCode !== 404) throw e;
      }
      if (d && d.state === "Completed") {
        return {
          notificationId: d.notificationId,
          state: d.state,
          targetPlatforms: d.targetPlatforms,
          apnsOutcomeCounts: d.apnsOutcomeCounts,
          polls,
        };
      }
      expect("getNotificationOutcomeDetails", Date.now() < deadline, `still ${d ? d.state : "404"} after ${polls} polls`);
      await sleep(100);
    }
  });

  // --- PNS feedback ---
  await step("getFeedbackContainerUrl", async () => {
    const url = await client.getFeedbackContainerUrl();
    expect("getFeedbackContainerUrl", typeof url === "string" && url.startsWith("https://"), `url ${JSON.stringify(url)}`);
    // The URL carries its own token: fetched without an Authorization
    // header, it lists the feedback (none here: log_only delivers all).
    const res = await fetch(url);
    const body = await res.text();
    expect("getFeedbackContainerUrl", res.status === 200, `GET the URL: status ${res.status}: ${body}`);
    return {
      https: url.startsWith("https://"),
      path: new URL(url).pathname,
      status: res.status,
      documents: (body.match(/<PnsFeedback /g) || []).length,
    };
  });

  // --- clean-up ---
  await step("deleteRegistration", async () => {
    await client.deleteRegistration(regId);
    try {
      await client.getRegistration(regId);
    } catch (e) {
      expect("deleteRegistration", e.statusCode === 404, `get after delete: status ${e.statusCode}`);
      return { getAfterDelete: e.statusCode };
    }
    return fail("deleteRegistration", "the registration is still there");
  });
  await step("deleteInstallation", async () => {
    await client.deleteInstallation("js-fcm-1");
    try {
      await client.getInstallation("js-fcm-1");
    } catch (e) {
      expect("deleteInstallation", e.statusCode === 404, `get after delete: status ${e.statusCode}`);
      return { getAfterDelete: e.statusCode };
    }
    return fail("deleteInstallation", "the installation is still there");
  });
}

main().then(
  () => print("done", {}),
  (e) => {
    print(e.step || current, { error: String(e && e.message ? e.message : e), statusCode: e.statusCode ?? null });
    process.exit(1);
  },
);
