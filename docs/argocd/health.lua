-- Argo CD health check for mixpeek.com/BucketSync (Lua 5.1, Argo CD's upstream format).
-- It follows kstatus, which Flux, Helm 4 --wait and `kubectl wait` use, so every tool
-- agrees on Healthy/Progressing/Degraded, and adds the two states only Argo CD can show:
-- Suspended for a paused sync or paused reconciliation, and Degraded for a remote sync
-- that Mixpeek reports as failed or auto-suspended (condition RemoteHealthy=False).
local conditions = {}
if obj.status ~= nil and obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    conditions[condition.type] = condition
  end
end

local function is_true(condition)
  return condition ~= nil and condition.status == "True"
end

local function describe(condition, fallback)
  if condition ~= nil then
    if condition.message ~= nil and condition.message ~= "" then return condition.message end
    if condition.reason ~= nil and condition.reason ~= "" then return condition.reason end
  end
  return fallback
end

-- Only Lua's base and table libraries exist in Argo CD's sandbox (argocd-cm has no
-- useOpenLibs for this kind): no string.format, no string methods.

-- An object being deleted: Argo CD's controller answers Progressing "Pending deletion" before
-- it runs a script; the script answers the same, so it agrees wherever it runs alone (Argo CD's
-- own resource-customization tests, `argocd admin settings resource-overrides health`).
if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  return {status = "Progressing", message = "Pending deletion"}
end

if obj.status == nil then
  return {status = "Progressing", message = "Waiting for the operator to handle the object"}
end

-- The mixpeek.com/reconcile-paused annotation: the operator makes no calls, so nothing
-- will progress; checked before observedGeneration, which stays behind while paused.
local reconcile_paused = conditions["ReconcilePaused"]
if is_true(reconcile_paused) then
  return {status = "Suspended", message = describe(reconcile_paused, "Reconciliation paused")}
end

-- The CRD defaults status.observedGeneration to -1, so a new object waits here too.
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed ~= generation then
  return {
    status = "Progressing",
    message = "Waiting for the operator to observe generation " .. tostring(generation),
  }
end

-- Stalled wins over Reconciling: only a human can fix it (the operator never sets both).
local stalled = conditions["Stalled"]
if is_true(stalled) then
  return {status = "Degraded", message = describe(stalled, "Stalled")}
end

local reconciling = conditions["Reconciling"]
if is_true(reconciling) then
  return {status = "Progressing", message = describe(reconciling, "Reconciling")}
end

local ready = conditions["Ready"]
if is_true(ready) then
  local remote = conditions["RemoteHealthy"]
  if remote ~= nil and remote.status == "False" then
    return {status = "Degraded", message = describe(remote, "Mixpeek reports the sync as unhealthy")}
  end
  if ready.reason == "Paused" then
    return {status = "Suspended", message = describe(ready, "Sync paused")}
  end
  return {status = "Healthy", message = describe(ready, "Ready")}
end

return {status = "Progressing", message = describe(ready, "Waiting for the operator to handle the object")}
