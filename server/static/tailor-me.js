var s=s=>s?{persona:s.persona,reasons:s.reasons,slots:s.slots}:null,o=(o,e,r,l)=>Promise.resolve(e.tok&&o("me").then(s=>s.ok&&s.json(),l)).then(o=>({visitorId:e.vid,stored:o||null,local:{profile:e.profile,session:e.sid},reasons:s(r)}));export{o as myData};
//# sourceMappingURL=tailor-me.js.map
